"""The test stream: 720p30 H.264 ~2.5 Mbit/s (2 s GOP) + AAC, encoded once into bench/out/."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .tools import require

OUT = Path(__file__).resolve().parent / "out"
SECONDS = 24  # longer than a measured window, so a loop boundary never hides in frame matching


def source_flv(seconds: int = SECONDS) -> Path:
    """Encode the looped source once; later runs reuse it (bench/out/ is gitignored)."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"source-720p30-{seconds}s.flv"
    if path.exists() and path.stat().st_size > 0:
        return path
    tmp = path.with_suffix(".tmp.flv")
    cmd = [
        require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(seconds),
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
        "-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "5000k",
        "-c:a", "aac", "-b:a", "128k", "-f", "flv", str(tmp),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=300)
    tmp.rename(path)
    return path
