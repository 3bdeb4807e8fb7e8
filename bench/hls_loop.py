"""Event loop lag of MicroVibe's media plane while it segments several streams (HLS).

    python -m bench.hls_loop SOURCE --streams 4 --seconds 15 --warmup 5 --out FILE [--no-hls]

Starts the media plane in this process (`media.runtime.start_media_plane`, with the tests' fake
control plane instead of Django), publishes SOURCE to `--streams` rooms with bench/publisher.py
processes, and after the warm-up probes the loop for `--seconds`: a task sleeps PROBE s again and
again and records how late it wakes (the overshoot is the time a ready callback waits for the loop).
Writes the figures as JSON to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from media.config import MediaConfig
from media.runtime import start_media_plane
from tests.media.fakes import FakeControl

from . import procstat
from .stats import percentile

ROOT = Path(__file__).resolve().parents[1]
PROBE = 0.010  # s


async def probe(seconds: float) -> list[float]:
    loop = asyncio.get_running_loop()
    lags, end = [], loop.time() + seconds
    while (start := time.monotonic()) < end:
        await asyncio.sleep(PROBE)
        lags.append((time.monotonic() - start - PROBE) * 1000)
    return lags


async def run(args: argparse.Namespace, hls_dir: Path, tmp: Path) -> dict:
    keys = {f"k{i}": f"room{i}" for i in range(args.streams)}
    config = MediaConfig(bind="127.0.0.1", rtmp_port=0, http_port=0, hls_enabled=not args.no_hls,
                         hls_path=str(hls_dir), hls_fragment=2.0, hls_playlist_length=60.0)
    plane = await start_media_plane(config, FakeControl(keys=keys).plane(), register_control=False)
    publishers = []
    try:
        for key in keys:
            url = f"rtmp://127.0.0.1:{plane.rtmp_port}/live/{key}"
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.publisher", url, args.source, str(tmp / f"{key}.log"),
                cwd=ROOT, stdout=asyncio.subprocess.PIPE)
            publishers.append(proc)
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if b"publishing" not in line:
                raise RuntimeError(f"publisher {key} did not start")
        await asyncio.sleep(args.warmup)
        cpu0, t0 = procstat.cpu_seconds(os.getpid()), time.monotonic()
        lags = await probe(args.seconds)
        cpu = 100 * (procstat.cpu_seconds(os.getpid()) - cpu0) / (time.monotonic() - t0)
        streams = list(plane.registry.streams())
        drops = sum(r.dropped for s in streams for r in getattr(s, "_readers", []) if r.name == "hls")
        live = len(streams)
    finally:
        for proc in publishers:
            if proc.returncode is None:
                proc.terminate()
        for proc in publishers:
            await proc.wait()
        await plane.stop()
    lags.sort()
    return {
        "hls": not args.no_hls, "streams": args.streams, "live_streams": live, "seconds": args.seconds,
        "probe_ms": PROBE * 1000, "samples": len(lags),
        "lag_median_ms": round(percentile(lags, 50), 3), "lag_p99_ms": round(percentile(lags, 99), 3),
        "lag_max_ms": round(lags[-1], 3), "cpu_pct": round(cpu, 1),
        "segments": sum(1 for _ in hls_dir.glob("*/*.ts")), "reader_drops": drops,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--no-hls", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="hls_loop %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="mv-bench-loop-") as tmp:
        result = asyncio.run(run(args, Path(tmp) / "hls", Path(tmp)))
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"  lag med {result['lag_median_ms']:.2f} / p99 {result['lag_p99_ms']:.2f} / max "
          f"{result['lag_max_ms']:.2f} ms, CPU {result['cpu_pct']:.1f}%, {result['segments']} segments", flush=True)


if __name__ == "__main__":
    main()
