"""FLV made by ffmpeg (an independent encoder), turned into hub access units for unit tests."""
from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

from media.codecs.flv_units import flv_access_units
from media.hub.unit import AccessUnit

from .procs import require_tool


@functools.cache
def ffmpeg_flv(seconds: int = 10, size: str = "320x180", fps: int = 30, gop: int = 30, bframes: int = 2,
               audio: bool = True, vcodec: str = "libx264") -> bytes:
    out = Path(tempfile.mkdtemp(prefix="mv-flv-")) / "src.flv"
    audio_in = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"] if audio else []
    audio_out = ["-c:a", "aac", "-b:a", "64k"] if audio else ["-an"]
    subprocess.run([require_tool("ffmpeg"), "-y", "-loglevel", "error",
                    "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}", *audio_in, "-t", str(seconds),
                    "-c:v", vcodec, *(["-preset", "veryfast", "-bf", str(bframes)] if vcodec == "libx264" else []),
                    "-g", str(gop), "-keyint_min", str(gop), *audio_out, "-f", "flv", str(out)],
                   check=True, timeout=120)
    return out.read_bytes()


def access_units(data: bytes) -> list[AccessUnit]:
    """The units an RTMP publisher of this FLV would write into the hub."""
    return flv_access_units(data)
