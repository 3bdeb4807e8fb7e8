"""Fan-out CPU benchmark (not a test): server CPU with N RTMP players over loopback.

    .venv/bin/python -m tests.media.bench_fanout /tmp/clip.flv 1 10 100 200

The clip (e.g. 720p30 ~2.6 Mbit/s H.264/AAC FLV) is pushed with ffmpeg -re -c copy; N players
run in a child process that completes the RTMP play and then reads and discards bytes. The
number is this process's CPU (the media plane) over 10 s, as % of one core.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import time

from media.config import MediaConfig
from media.runtime import start_media_plane
from tests.media.fakes import FakeControl, RtmpTestClient


def _players(port: int, n: int, seconds: float) -> None:
    async def one():
        c = await RtmpTestClient.connect(port)
        await c.play("room1")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if not await c.reader.read(1 << 16):
                break
        c.close()

    async def main():
        await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)

    asyncio.run(main())


async def bench(clip: str, counts: list[int]) -> None:
    control = FakeControl()
    plane = await start_media_plane(MediaConfig(bind="127.0.0.1", rtmp_port=0, http_port=0), control.plane())
    pub = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i", clip,
        "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{plane.rtmp_port}/live/k1",
    )
    while plane.registry.get("room1") is None:
        await asyncio.sleep(0.1)
    for n in counts:
        proc = multiprocessing.Process(target=_players, args=(plane.rtmp_port, n, 16), daemon=True)
        proc.start()
        stream = plane.registry.get("room1")
        while stream.viewer_count < n:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        c0, t0, b0 = time.process_time(), time.monotonic(), stream.bytes_in
        await asyncio.sleep(10)
        cpu = (time.process_time() - c0) / (time.monotonic() - t0) * 100
        mbit = (stream.bytes_in - b0) * 8 / 10 / 1e6
        from rtmp.from_hub import RtmpFanout

        f = stream.fanout(RtmpFanout)
        print(f"{n:4d} players: {cpu:5.1f} % of a core  (stream {mbit:.2f} Mbit/s, skipped {f.skipped}, "
              f"dropped {f.dropped_slow}, shared writes {f.shared_writes}, own {f.own_writes})", flush=True)
        proc.join(10)
        while stream.viewer_count:
            await asyncio.sleep(0.1)
    pub.kill()
    await pub.wait()
    await plane.stop()


if __name__ == "__main__":
    asyncio.run(bench(sys.argv[1], [int(x) for x in sys.argv[2:]] or [1, 10, 100, 200]))
