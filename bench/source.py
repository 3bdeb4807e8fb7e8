"""The test stream: 720p30 H.264 ~2.5 Mbit/s (2 s GOP) + AAC, encoded once into bench/out/.

x264 veryfast uses B-frames (3 at most); `bframes=False` encodes a second clip without them (`-bf 0`,
otherwise the same) for the WebRTC measurements (bench/bridges.py): browsers expect no B-frames in
WebRTC H.264, and the fan-out and HLS figures keep the clip they were measured with.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .tools import require

OUT = Path(__file__).resolve().parent / "out"
SECONDS = 24  # longer than a measured window, so a loop boundary never hides in frame matching


def source_flv(seconds: int = SECONDS, bframes: bool = True, gop: int = 60) -> Path:
    """Encode the looped source once; later runs reuse it (bench/out/ is gitignored). `gop` in
    frames: 60 (2 s, as HLS_FRAGMENT), 30 for LL-HLS's 1 s segments (bench/llhls.py)."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"source-720p30-{seconds}s{'' if bframes else '-bf0'}{'' if gop == 60 else f'-g{gop}'}.flv"
    if path.exists() and path.stat().st_size > 0:
        return path
    tmp = path.with_suffix(".tmp.flv")
    cmd = [
        require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(seconds),
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", *([] if bframes else ["-bf", "0"]),
        "-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "5000k",
        "-c:a", "aac", "-b:a", "128k", "-f", "flv", str(tmp),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=300)
    tmp.rename(path)
    return path
