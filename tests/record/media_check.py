"""Sources and checks for the recording tests: ffmpeg-made units, ffprobe/ffmpeg read-backs."""
from __future__ import annotations

import functools
import json
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import av

from media.hub.unit import TIME_BASE, VIDEO, AccessUnit
from media.record.writer import Mp4Recorder, RecordingInfo
from tests.support.flv_source import access_units, ffmpeg_flv
from tests.support.media import assert_no_decode_errors
from tests.support.media import decode_errors as damage
from tests.support.procs import require_tool


def flv_units(seconds: int = 10, **kwargs) -> list[AccessUnit]:
    """H.264 (2 B-frames, 1 s GOPs) + AAC as an RTMP publisher writes them into the hub."""
    return access_units(ffmpeg_flv(seconds=seconds, **kwargs))


def media(units: list[AccessUnit], kind: str = VIDEO) -> list[AccessUnit]:
    return [u for u in units if u.kind == kind and not u.config]


def shifted(units: list[AccessUnit], ticks: int) -> list[AccessUnit]:
    return [replace(u, dts=u.dts + ticks, pts=u.pts + ticks) for u in units]


@functools.cache
def hevc_units(seconds: int = 3, size: str = "320x180") -> tuple[AccessUnit, ...]:
    """libx265 (B-frames) through an MP4, demuxed into hub units: the hvcC config first."""
    path = Path(tempfile.mkdtemp(prefix="mv-rec-")) / "hevc.mp4"
    subprocess.run([require_tool("ffmpeg"), "-y", "-loglevel", "error", "-f", "lavfi",
                    "-i", f"testsrc2=size={size}:rate=30", "-t", str(seconds), "-c:v", "libx265",
                    "-preset", "ultrafast", "-x265-params", "log-level=error:keyint=30", str(path)],
                   check=True, timeout=120)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tick = stream.time_base * TIME_BASE
        units = [AccessUnit(VIDEO, "hevc", 0, 0, bytes(stream.codec_context.extradata), config=True)]
        packets = [p for p in container.demux(stream) if p.size]
        start = min(p.dts for p in packets)  # the hub's clock never goes below 0
        for p in packets:
            units.append(AccessUnit(VIDEO, "hevc", round((p.dts - start) * tick), round((p.pts - start) * tick),
                                    bytes(p), keyframe=p.is_keyframe))
    return tuple(units)


def record(path: Path, units) -> RecordingInfo:
    recorder = Mp4Recorder(path)
    for unit in units:
        recorder.write(unit)
    info = recorder.close()
    assert info is not None
    return info


def probe(path: Path) -> dict:
    """{"format": ..., "video": ..., "audio": ...} with frame counts (every frame decoded)."""
    result = subprocess.run([require_tool("ffprobe"), "-v", "error", "-count_frames", "-show_streams",
                             "-show_format", "-of", "json", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert_no_decode_errors(result, path)
    found = json.loads(result.stdout)
    return {"format": found["format"], **{s["codec_type"]: s for s in found["streams"]}}


def decode_errors(path: Path) -> str:
    """What FFmpeg reports as damage while decoding the whole file ("" when nothing)."""
    result = subprocess.run([require_tool("ffmpeg"), "-v", "error", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return "\n".join(damage(result.stderr))


def video_timestamps(path: Path) -> list[tuple[int, int]]:
    """(dts, pts) of each video packet in the file, in TIME_BASE ticks, in decode order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tick = stream.time_base * TIME_BASE
        return [(round(p.dts * tick), round(p.pts * tick)) for p in container.demux(stream) if p.size]


def picture_types(path: Path) -> list[str]:
    """ffprobe's picture type of each decoded video frame, in presentation order."""
    result = subprocess.run([require_tool("ffprobe"), "-v", "error", "-select_streams", "v", "-show_frames",
                             "-show_entries", "frame=pict_type", "-of", "json", str(path)],
                            capture_output=True, text=True, timeout=60, check=True)
    assert not result.stderr, result.stderr
    return [frame["pict_type"] for frame in json.loads(result.stdout)["frames"]]
