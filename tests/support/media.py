"""Real media clients for tests: ffmpeg publishes as OBS does; ffmpeg/ffprobe/PyAV read back."""
from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import av
import av.logging

from .procs import require_tool

FPS = 30
WIDTH, HEIGHT = 640, 360
AAC_RATE = 44100 / 1024  # AAC frames a second of ffmpeg_publish's 44.1 kHz sine
# More than a picture's interval (33-34 ms on FLV's millisecond clock; at most 10 % longer on a
# WebRTC publisher's slewed clock), less than two: the step over one lost picture.
FRAME_GAP = 1.5 / FPS


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


# What ffmpeg and ffprobe write on stderr at `-loglevel error` is, but for these lines, damage they
# met while demuxing or decoding: ffmpeg conceals a broken picture (the previous one's macroblocks
# stand in) and still exits 0, so a clean exit proves nothing. None of the reads in this suite
# writes a harmless line today: each read either stops itself (`-t`) or reads a file or an HLS
# playlist to its end, and a live RTMP/HTTP-FLV stream that ends cleanly ends silently. A pattern
# added here must name the exact message and why it is not damage.
HARMLESS: tuple[re.Pattern[str], ...] = ()


def decode_errors(stderr: str) -> list[str]:
    """The lines of an ffmpeg/ffprobe stderr (run at `-loglevel error`) that report damage."""
    return [line for line in stderr.splitlines() if line.strip() and not any(p.search(line) for p in HARMLESS)]


@dataclass
class Decoded:
    video_frames: int
    audio_frames: int
    first_video_pts: float | None  # ms
    elapsed: float
    returncode: int
    stderr: str
    video_pts: list[float] = field(default_factory=list)  # s, of every decoded picture in output order
    audio_start: float | None = None  # s, the first audio frame's time on the output timeline

    @property
    def errors(self) -> list[str]:
        return decode_errors(self.stderr)

    @property
    def largest_gap(self) -> float:
        """The longest step (s) between two consecutive pictures: 1/fps when none is missing."""
        return max((b - a for a, b in zip(self.video_pts, self.video_pts[1:], strict=False)), default=0.0)


Bound = int | tuple[int, int]


def _within(count: int, bound: Bound) -> bool:
    low, high = (bound, bound) if isinstance(bound, int) else bound
    return low <= count <= high


def assert_clean(decoded: Decoded, *, video: Bound | None, audio: Bound | None = None, max_gap: float | None = None,
                 what: object = "") -> None:
    """ffmpeg exited 0, reported no damage, and decoded `video` / `audio` frames: an int is exact, a
    (low, high) pair inclusive; None skips that track. With `max_gap`, no two consecutive pictures
    are further apart (s) than that: a frame lost anywhere shows as a gap in the timestamps."""
    summary = (what, f"{decoded.video_frames} video, {decoded.audio_frames} audio frames, rc {decoded.returncode}",
               decoded.stderr[-1500:])
    assert decoded.returncode == 0, summary
    assert not decoded.errors, summary
    assert video is None or _within(decoded.video_frames, video), (f"video frames not in {video}", *summary)
    assert audio is None or _within(decoded.audio_frames, audio), (f"audio frames not in {audio}", *summary)
    if max_gap is not None:
        assert decoded.largest_gap <= max_gap, (f"a {decoded.largest_gap:.3f} s gap between pictures", *summary)


def assert_no_decode_errors(result: subprocess.CompletedProcess, what: object = "") -> None:
    """For ffmpeg/ffprobe runs made with subprocess directly (at `-loglevel error`): exit 0, no damage."""
    stderr = result.stderr if isinstance(result.stderr, str) else (result.stderr or b"").decode(errors="replace")
    assert result.returncode == 0 and not decode_errors(stderr), (what, result.returncode, stderr[-1500:])


def framemd5_frames(stdout: str) -> tuple[dict[str, int], list[float], dict[str, float]]:
    """({"video": n, "audio": n}, pts in s of each video frame, {kind: its first frame's pts in s})
    from ffmpeg's framemd5 output."""
    kinds: dict[int, str] = {}
    time_bases: dict[int, float] = {}
    counts = {"video": 0, "audio": 0}
    video_pts: list[float] = []
    starts: dict[str, float] = {}
    for line in stdout.splitlines():
        if line.startswith("#media_type "):
            index, kind = line[len("#media_type "):].split(":")
            kinds[int(index)] = kind.strip()
        elif line.startswith("#tb "):
            index, rate = line[len("#tb "):].split(":")
            num, den = rate.strip().split("/")
            time_bases[int(index)] = int(num) / int(den)
        elif line and not line.startswith("#") and "," in line:
            fields = [f.strip() for f in line.split(",")]
            index = int(fields[0])
            kind = kinds.get(index, "video" if index == 0 else "audio")
            counts[kind] = counts.get(kind, 0) + 1
            pts = int(fields[2]) * time_bases.get(index, 1 / 1000)
            starts.setdefault(kind, pts)
            if kind == "video":
                video_pts.append(pts)
    return counts, video_pts, starts


def ffmpeg_decode(url: str, *, seconds: float | None, timeout: float = 30.0) -> Decoded:
    """Decode `seconds` of the stream (all of it when None) and count decoded video and audio frames
    (framemd5 prints one line per decoded frame). A track the input lacks counts 0."""
    started = time.monotonic()
    duration = [] if seconds is None else ["-t", str(seconds)]
    result = subprocess.run(
        [require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-i", url, *duration,
         "-map", "0:v?", "-map", "0:a?", "-f", "framemd5", "-"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )
    elapsed = time.monotonic() - started
    counts, video_pts, starts = framemd5_frames(result.stdout)
    first_video_pts = round(video_pts[0] * 1000) if video_pts else None
    return Decoded(counts["video"], counts["audio"], first_video_pts, elapsed, result.returncode, result.stderr,
                   video_pts, starts.get("audio"))


def live_frames(seconds: float, rate: float = FPS, *, start: float = 0.0, slack: int = 1) -> tuple[int, int]:
    """What `-t seconds` keeps of a track at `rate` frames a second that loses none and starts at
    `start` (s) on the output timeline: the frames in [start, seconds), `slack` either way for the
    frame on each edge (millisecond timestamps, a cut audio frame). 5 s at 30 fps: 149-151, which
    a server dropping one frame a second fails."""
    expected = (seconds - start) * rate
    return math.floor(expected) - slack, math.ceil(expected) + slack


def assert_live(decoded: Decoded, seconds: float, *, audio_rate: float | None = AAC_RATE, slack: int = 1,
                starts_near_zero: bool = True, what: object = "") -> None:
    """`ffmpeg_decode(live_url, seconds=S)` of a 30 fps source, nothing lost: a viewer starts at the
    keyframe it joins at (the GOP cache's), which the server puts near 0 on its timeline (within
    200 ms: the first audio may come before it); `-t S` then keeps every frame from there to S, so
    the counts are S less that start at each track's rate, and no picture is missing in between.
    (A live HLS player starts at a segment boundary instead: `starts_near_zero=False`.)"""
    assert decoded.first_video_pts is not None, (what, decoded)
    assert not starts_near_zero or decoded.first_video_pts < 200, (what, decoded.first_video_pts)
    video = live_frames(seconds, start=decoded.first_video_pts / 1000, slack=slack)
    audio = None if audio_rate is None else live_frames(seconds, audio_rate, start=decoded.audio_start or 0.0,
                                                          slack=slack)
    assert_clean(decoded, video=video, audio=audio, max_gap=FRAME_GAP, what=what)


@contextlib.contextmanager
def pyav_errors() -> Iterator[list[str]]:
    """What FFmpeg's libraries inside PyAV report at error level, from any thread (aiortc decodes in
    its own), while the block runs: PyAV logs nothing unless asked. Check the list after the block."""
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    found: list[str] = []
    try:
        with av.logging.Capture(local=False) as logs:
            yield found
    finally:
        av.logging.set_level(previous)
        found += [f"[{name}] {message.rstrip()}" for level, name, message in logs if level <= av.logging.ERROR]
        found[:] = decode_errors("\n".join(found))


def ffprobe_streams(url: str, timeout: float = 20.0) -> dict[str, dict]:
    result = subprocess.run(
        [require_tool("ffprobe"), "-v", "error", "-show_streams", "-of", "json", url],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )
    assert_no_decode_errors(result, url)
    return {s["codec_type"]: s for s in json.loads(result.stdout)["streams"]}


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
