"""A WHIP publisher (aiortc: H.264 pattern + Opus tone) in its own process, for the test that kills
it: SIGKILL leaves its peer connection without a WHIP DELETE or a DTLS close, as a lost network would."""
import asyncio
import sys

from tests.sfu.clients import PatternVideo, ToneAudio, whip_publish


async def main(base: str, public_id: str, stream_key: str) -> None:
    await whip_publish(base, public_id, stream_key, [PatternVideo(320, 180, 30), ToneAudio()], video_codec="H264")
    print("publishing", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
