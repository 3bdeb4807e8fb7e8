"""CmafWriter: real ffmpeg-encoded H.264 (with B-frames) + AAC, and Opus, fed as hub units, cut
into ~200 ms parts and keyframe-started segments as the LL-HLS segmenter will, then read back
with ffmpeg/ffprobe: the whole stream and every segment alone (init + its parts) decode without
a complaint, every picture is there with its unit's pts, and the audio frame count is kept."""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import pytest

from media.codecs.flv_units import flv_access_units
from media.hls.cmaf import CmafError, CmafPart, CmafWriter, UnsupportedCodec
from media.hub.unit import AUDIO, TIME_BASE, VIDEO, AccessUnit
from tests.support.media import assert_no_decode_errors
from tests.support.procs import require_tool

PART_TICKS = TIME_BASE // 5  # ~200 ms parts
AUDIO_SEGMENT_PARTS = 5  # audio only: no keyframes to cut on, a segment every ~1 s


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: these tests need no Django."""


def _ffmpeg(*args: str) -> bytes:
    result = subprocess.run([require_tool("ffmpeg"), "-hide_banner", "-v", "error", *args],
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0 and not result.stderr, result.stderr[-1500:]
    return result.stdout


@pytest.fixture(scope="module")
def flv_clip() -> bytes:
    """4 s of 320x240 30 fps H.264 (1 s GOP, up to 2 B-frames) + 44.1 kHz AAC, as FLV."""
    return _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi",
                   "-i", "sine=frequency=440:sample_rate=44100", "-t", "4", "-c:v", "libx264",
                   "-preset", "ultrafast", "-g", "30", "-keyint_min", "30", "-bf", "2", "-pix_fmt", "yuv420p",
                   "-c:a", "aac", "-b:a", "64k", "-f", "flv", "-")


@pytest.fixture(scope="module")
def opus_units(tmp_path_factory) -> list[AccessUnit]:
    """2 s of 48 kHz stereo Opus (20 ms packets) from an Ogg file, as a WebRTC source's units."""
    path = tmp_path_factory.mktemp("opus") / "clip.ogg"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "2", "-ac", "2",
            "-c:a", "libopus", "-b:a", "48k", str(path))
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        head = bytes(stream.codec_context.extradata)
        packets = [(p.pts, bytes(p)) for p in container.demux(stream) if p.size]
    first = packets[0][0]
    scale = Fraction(TIME_BASE) * stream.time_base
    units = [AccessUnit(AUDIO, "opus", int((pts - first) * scale), int((pts - first) * scale), payload, keyframe=True)
             for pts, payload in packets]
    return [AccessUnit(AUDIO, "opus", 0, 0, head, config=True), *units]


# --- A stand-in for the segmenter ---------------------------------------------------------------


@dataclass
class Cut:
    writer: CmafWriter
    media: list[AccessUnit]
    segments: list[list[CmafPart]] = field(default_factory=list)

    @property
    def parts(self) -> list[CmafPart]:
        return [part for segment in self.segments for part in segment]

    def stream(self) -> bytes:
        return self.writer.init + b"".join(part.data for part in self.parts)

    def segment_bytes(self, index: int) -> bytes:
        return self.writer.init + b"".join(part.data for part in self.segments[index])

    def segment_units(self, index: int, kind: str) -> list[AccessUnit]:
        """The media units of `kind` a segment holds: from its first part's start to the next's."""
        start = self.segments[index][0].start
        end = self.segments[index + 1][0].start if index + 1 < len(self.segments) else None
        return [u for u in self.media if u.kind == kind and u.dts >= start and (end is None or u.dts < end)]


def _cut(units: list[AccessUnit]) -> Cut:
    """Push every unit; before a keyframe (a new segment) or once a part would pass ~200 ms, push
    the unit and flush: the part ends right before it."""
    configs = [u for u in units if u.config]
    writer = CmafWriter(configs)
    cut = Cut(writer, [u for u in units if not u.config], [[]])
    for unit in cut.media:
        writer.push(unit)
        start = writer.pending_start()
        if unit.kind != writer.main_kind or start is None or start == unit.dts:
            continue
        new_segment = unit.keyframe if unit.kind == VIDEO else len(cut.segments[-1]) >= AUDIO_SEGMENT_PARTS
        if new_segment or unit.dts - start >= PART_TICKS:
            _add(cut, writer.flush())
            if new_segment:
                cut.segments.append([])
    _add(cut, writer.finish())
    cut.segments = [segment for segment in cut.segments if segment]
    return cut


def _add(cut: Cut, part: CmafPart | None) -> None:
    assert part is not None
    cut.segments[-1].append(part)


# --- Reading back ---------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _assert_decodes_silently(path: str) -> None:
    result = subprocess.run([require_tool("ffmpeg"), "-v", "error", "-i", path, "-f", "null", "-"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)
    assert_no_decode_errors(result, path)
    assert result.stderr == "", result.stderr[-1500:]


def _counted_frames(path: str) -> dict[str, int]:
    """ffprobe -count_frames: decoded frames per track kind."""
    result = subprocess.run([require_tool("ffprobe"), "-v", "error", "-count_frames", "-show_entries",
                             "stream=codec_type,codec_name,nb_read_frames", "-of", "json", path],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)
    assert_no_decode_errors(result, path)
    return {s["codec_type"]: int(s["nb_read_frames"]) for s in json.loads(result.stdout)["streams"]}


def _frame_pts(path: str, kind: str) -> list[int]:
    """pts (in the track's timescale) of every decoded frame of `kind`, in output order."""
    selector = "v:0" if kind == VIDEO else "a:0"
    result = subprocess.run([require_tool("ffprobe"), "-v", "error", "-select_streams", selector, "-show_entries",
                             "frame=pts", "-of", "json", path],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)
    assert_no_decode_errors(result, path)
    return [int(f["pts"]) for f in json.loads(result.stdout)["frames"]]


def _pre_skip(head: AccessUnit) -> int:
    return int.from_bytes(head.payload[10:12], "little")


def _audio_ticks(units: list[AccessUnit], rate: int) -> list[int]:
    return [(u.dts * rate + TIME_BASE // 2) // TIME_BASE for u in units]


def _check_stream(tmp_path: Path, cut: Cut, *, audio_rate: int | None, pre_skip: int = 0) -> dict[str, int]:
    """The whole stream and each segment alone decode silently, with every picture at its pts and
    every audio frame at its unit's time (the first Opus frame later by its pre-skip: trimmed)."""
    path = _write(tmp_path, "stream.mp4", cut.stream())
    _assert_decodes_silently(path)
    counts = _counted_frames(path)
    video = [u for u in cut.media if u.kind == VIDEO]
    audio = [u for u in cut.media if u.kind == AUDIO]
    assert counts.get("video", 0) == len(video), counts
    assert abs(counts.get("audio", 0) - len(audio)) <= 1, (counts, len(audio))
    if video:
        assert _frame_pts(path, VIDEO) == sorted(u.pts for u in video)
    if audio_rate:
        expected = _audio_ticks(audio, audio_rate)
        assert set(_frame_pts(path, AUDIO)) <= {expected[0] + pre_skip, *expected[1:]}
    for index in range(len(cut.segments)):
        segment = _write(tmp_path, f"seg{index}.mp4", cut.segment_bytes(index))
        _assert_decodes_silently(segment)
        if video:
            assert _frame_pts(segment, VIDEO) == sorted(u.pts for u in cut.segment_units(index, VIDEO)), index
    return counts


def _assert_contiguous(cut: Cut) -> None:
    """Parts tile the main track: each starts where the last ended, numbered from 1."""
    parts = cut.parts
    assert [p.sequence for p in parts] == list(range(1, len(parts) + 1))
    for before, after in zip(parts, parts[1:], strict=False):
        assert before.start + before.ticks == after.start
    assert all(segment[0].independent for segment in cut.segments)


# --- Tests ------------------------------------------------------------------------------------


def test_h264_aac_with_b_frames(tmp_path, flv_clip):
    units = flv_access_units(flv_clip)
    video = [u for u in units if u.kind == VIDEO and not u.config]
    assert len({u.pts - u.dts for u in video}) > 1, "the clip should have B-frames (varying composition offsets)"
    cut = _cut(units)
    counts = _check_stream(tmp_path, cut, audio_rate=44100)
    assert counts["video"] == 120 and len(cut.segments) == 4, (counts, len(cut.segments))
    _assert_contiguous(cut)
    assert max(p.ticks for p in cut.parts) <= PART_TICKS + TIME_BASE // 30
    # A segment is its GOP: it starts with a keyframe and ends right before the next.
    for index, segment in enumerate(cut.segments):
        assert segment[0].start == cut.segment_units(index, VIDEO)[0].dts
        assert cut.segment_units(index, VIDEO)[0].keyframe
        assert not any(p.independent for p in segment[1:])


def test_video_only(tmp_path, flv_clip):
    cut = _cut(flv_access_units(flv_clip, kinds=(VIDEO,)))
    counts = _check_stream(tmp_path, cut, audio_rate=None)
    assert counts == {"video": 120}
    _assert_contiguous(cut)


def test_aac_only(tmp_path, flv_clip):
    units = flv_access_units(flv_clip, kinds=(AUDIO,))
    cut = _cut(units)
    counts = _check_stream(tmp_path, cut, audio_rate=44100)
    assert set(counts) == {"audio"}
    _assert_contiguous(cut)
    assert all(p.independent for p in cut.parts)


def test_opus_only(tmp_path, opus_units):
    cut = _cut(opus_units)
    counts = _check_stream(tmp_path, cut, audio_rate=48000, pre_skip=_pre_skip(opus_units[0]))
    assert abs(counts["audio"] - (len(opus_units) - 1)) <= 1
    _assert_contiguous(cut)
    # 20 ms packets: 960 samples each on the 48 kHz track, 1800 ticks a packet on the hub's clock.
    assert {p.ticks % 1800 for p in cut.parts} == {0}


def test_h264_opus(tmp_path, flv_clip, opus_units):
    """A WebRTC-style pairing: the video of the clip, the Opus audio, interleaved by dts."""
    video = [u for u in flv_access_units(flv_clip, kinds=(VIDEO,)) if u.dts < 2 * TIME_BASE or u.config]
    units = sorted(video + opus_units, key=lambda u: (not u.config, u.dts))
    cut = _cut(units)
    _check_stream(tmp_path, cut, audio_rate=48000, pre_skip=_pre_skip(opus_units[0]))
    _assert_contiguous(cut)


def test_flush_keeps_each_tracks_newest_sample(flv_clip):
    units = flv_access_units(flv_clip, kinds=(VIDEO,))
    writer = CmafWriter([units[0]])
    assert writer.init.startswith(b"\x00\x00\x00\x1cftypiso6")
    writer.push(units[1])
    assert writer.flush() is None  # its duration is not known until the next picture
    writer.push(units[2])
    part = writer.flush()
    assert part is not None and part.independent and part.ticks == units[2].dts - units[1].dts
    assert writer.pending_start() == units[2].dts


def test_refuses_what_it_cannot_write(flv_clip):
    units = flv_access_units(flv_clip, kinds=(VIDEO,))
    with pytest.raises(UnsupportedCodec):
        CmafWriter([AccessUnit(VIDEO, "av1", 0, 0, b"\x81" * 4, config=True)])
    with pytest.raises(CmafError, match="no SPS"):  # an hvcC without its parameter sets
        CmafWriter([AccessUnit(VIDEO, "hevc", 0, 0, b"\x01" + bytes(22), config=True)])
    writer = CmafWriter([units[0]])
    writer.push(units[1])
    with pytest.raises(CmafError, match="does not increase"):
        writer.push(units[1])
    with pytest.raises(CmafError, match="no audio/aac track"):
        writer.push(AccessUnit(AUDIO, "aac", 0, 0, b"\x21", keyframe=True))
    with pytest.raises(CmafError, match="config changed"):
        writer.push(AccessUnit(VIDEO, "h264", 0, 0, units[0].payload + b"\x00", config=True))


@pytest.fixture(scope="module")
def hevc_units(tmp_path_factory) -> list[AccessUnit]:
    return hevc_clip(tmp_path_factory.mktemp("hevc"))


def hevc_clip(folder: Path) -> list[AccessUnit]:
    """3 s of 480x270 30 fps HEVC (x265, 1 s closed GOP as OBS sends, B-frames) from an MP4, as an
    Enhanced RTMP publisher's units: the hvcC record as config, length-prefixed NAL units."""
    path = folder / "clip.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=480x270:rate=30", "-t", "3", "-c:v", "libx265", "-preset",
            "ultrafast", "-x265-params", "log-level=error:bframes=3:keyint=30:min-keyint=30:scenecut=0:open-gop=0",
            "-tag:v", "hvc1", str(path))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        record, tick = bytes(stream.codec_context.extradata), stream.time_base * TIME_BASE
        packets = [p for p in container.demux(stream) if p.size]
        first = packets[0].dts  # below 0 with B-frames (the MP4's edit list): the hub's clock starts at 0
        units = [AccessUnit(VIDEO, "hevc", round((p.dts - first) * tick), round((p.pts - first) * tick), bytes(p),
                            keyframe=p.is_keyframe) for p in packets]
    return [AccessUnit(VIDEO, "hevc", 0, 0, record, config=True), *units]


def test_hevc_with_b_frames(tmp_path, hevc_units):
    video = [u for u in hevc_units if not u.config]
    assert len({u.pts - u.dts for u in video}) > 1, "the clip should have B-frames"
    cut = _cut(hevc_units)
    counts = _check_stream(tmp_path, cut, audio_rate=None)
    assert counts["video"] == 90 and len(cut.segments) == 3, (counts, len(cut.segments))
    _assert_contiguous(cut)
    assert b"hvc1" in cut.writer.init and b"hvcC" in cut.writer.init
    probe = subprocess.run([require_tool("ffprobe"), "-v", "error", "-show_entries",
                            "stream=codec_name,codec_tag_string,width,height", "-of", "json",
                            _write(tmp_path, "hevc.mp4", cut.stream())],
                           capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(probe.stdout)["streams"][0] == {"codec_name": "hevc", "codec_tag_string": "hvc1",
                                                      "width": 480, "height": 270}
