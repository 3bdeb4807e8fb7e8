"""Real media clients for tests: ffmpeg publishes as OBS does; ffmpeg/ffprobe/PyAV read back."""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass

from .procs import require_tool

FPS = 30
WIDTH, HEIGHT = 640, 360


def ffmpeg_publish(url: str, *, gop: int = FPS, seconds: float | None = None, size: str = f"{WIDTH}x{HEIGHT}",
                   bitrate: str = "800k", bframes: int | None = None) -> subprocess.Popen:
    """H.264 + AAC from testsrc2 + sine at real time (-re), FLV over RTMP, as OBS would push.

    Without `bframes`, x264's zerolatency tune (no B-frames); with it, x264's own B-frame decisions
    up to that many (OBS's default x264 settings send up to 3, with B-pyramid).
    """
    duration = ["-t", str(seconds)] if seconds else []
    tune = ["-tune", "zerolatency"] if bframes is None else ["-bf", str(bframes)]
    return subprocess.Popen(
        [require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={FPS}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
         *duration, "-c:v", "libx264", "-preset", "veryfast", *tune, "-g", str(gop),
         "-keyint_min", str(gop), "-b:v", bitrate, "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "96k", "-f", "flv", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


@dataclass
class Decoded:
    video_frames: int
    audio_frames: int
    first_video_pts: float | None
    elapsed: float
    returncode: int
    stderr: str


def ffmpeg_decode(url: str, *, seconds: float, timeout: float = 30.0) -> Decoded:
    """Decode `seconds` of the stream and count decoded video and audio frames (framemd5 prints
    one line per decoded frame)."""
    started = time.monotonic()
    result = subprocess.run(
        [require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-i", url, "-t", str(seconds),
         "-map", "0:v", "-map", "0:a", "-f", "framemd5", "-"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )
    elapsed = time.monotonic() - started
    counts = {0: 0, 1: 0}
    first_video_pts = None
    for line in result.stdout.splitlines():
        if line.startswith("#") or "," not in line:
            continue
        fields = [f.strip() for f in line.split(",")]
        index = int(fields[0])
        counts[index] = counts.get(index, 0) + 1
        if index == 0 and first_video_pts is None:
            first_video_pts = int(fields[2])
    return Decoded(counts[0], counts[1], first_video_pts, elapsed, result.returncode, result.stderr)


def ffprobe_streams(url: str, timeout: float = 20.0) -> dict[str, dict]:
    result = subprocess.run(
        [require_tool("ffprobe"), "-v", "error", "-show_streams", "-of", "json", url],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return {s["codec_type"]: s for s in json.loads(result.stdout)["streams"]}


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
