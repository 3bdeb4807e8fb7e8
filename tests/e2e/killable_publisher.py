"""A WHIP publisher (aiortc: H.264 pattern + Opus tone) in its own process, for the test that kills
it: SIGKILL leaves its peer connection without a WHIP DELETE or a DTLS close, as a lost network would.
`start(service, room)` runs it and returns once the room is live."""
import asyncio
import subprocess
import sys

from tests.sfu.clients import PatternVideo, ToneAudio, whip_publish
from tests.support.media import wait_until
from tests.support.procs import ROOT


def start(service, room) -> subprocess.Popen:
    from .test_rtmp_ingest import room_status

    publisher = subprocess.Popen([sys.executable, "-m", "tests.e2e.killable_publisher", service.url(""),
                                  room["room"]["room_id"], room["stream_key"]], cwd=ROOT, stdout=subprocess.PIPE,
                                 text=True)
    assert publisher.stdout.readline().strip() == "publishing", service.log()[-2000:]
    assert wait_until(lambda: room_status(service, room) == "live", 10)
    return publisher


async def main(base: str, public_id: str, stream_key: str) -> None:
    await whip_publish(base, public_id, stream_key, [PatternVideo(320, 180, 30), ToneAudio()], video_codec="H264")
    print("publishing", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
