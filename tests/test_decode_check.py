"""The suite's decode check (tests/support/media.py) catches what a viewer would see: ffmpeg conceals
a damaged picture and exits 0, and a lost frame leaves nothing on stderr at all, so the check reads
ffmpeg's stderr and counts frames and gaps against what was sent."""
from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import av
import pytest

from media.codecs import avc, flv
from media.codecs.flv_units import unit_tag_body
from media.hub.unit import AUDIO, VIDEO, AccessUnit
from tests.support.flv_source import access_units, ffmpeg_flv
from tests.support.media import (
    FPS,
    assert_clean,
    assert_live,
    assert_no_decode_errors,
    ffmpeg_decode,
    framemd5_frames,
    live_frames,
    pyav_errors,
)
from tests.support.procs import require_tool

SECONDS = 2
FRAME_GAP = 1.5 / FPS  # more than one frame interval, less than two: one lost picture


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: no Django here."""


def clip() -> list[AccessUnit]:
    """2 s of x264 (1 s GOPs, no B-frames) + AAC as a publisher sends it: 60 pictures."""
    return access_units(ffmpeg_flv(seconds=SECONDS, bframes=0))


def pictures(units: list[AccessUnit]) -> list[AccessUnit]:
    return [u for u in units if u.kind == VIDEO and not u.config]


def write_flv(path: Path, units: list[AccessUnit]) -> str:
    """The units as an HTTP-FLV viewer gets them."""
    tags = [flv.flv_tag(flv.TAG_VIDEO if u.kind == VIDEO else flv.TAG_AUDIO, u.ms, unit_tag_body(u)) for u in units]
    path.write_bytes(flv.flv_header(audio=True, video=True) + b"".join(tags))
    return str(path)


def flipped(unit: AccessUnit) -> AccessUnit:
    """The unit with 16 bytes in the middle of its slice NAL inverted (lengths kept: it still parses)."""
    out = b""
    for nal in avc.split_avcc(unit.payload):
        if avc.nal_type(nal) in (1, 5) and len(nal) > 64:
            middle = len(nal) // 2
            nal = nal[:middle] + bytes(b ^ 0xA5 for b in nal[middle:middle + 16]) + nal[middle + 16:]
        out += len(nal).to_bytes(4, "big") + nal
    return replace(unit, payload=out)


def damaged(units: list[AccessUnit]) -> list[AccessUnit]:
    """The clip with 6 of its 58 P-frames damaged."""
    hit = {id(u) for u in pictures(units)[5::10] if not u.keyframe}
    return [flipped(u) if id(u) in hit else u for u in units]


def expected_audio(units: list[AccessUnit]) -> int:
    return len([u for u in units if u.kind == AUDIO and not u.config])


def test_a_clean_clip_reports_no_error_every_frame_and_no_gap(tmp_path):
    units = clip()
    decoded = ffmpeg_decode(write_flv(tmp_path / "clean.flv", units), seconds=None)
    assert decoded.errors == [] and len(pictures(units)) == SECONDS * FPS
    assert_clean(decoded, video=SECONDS * FPS, audio=expected_audio(units), max_gap=FRAME_GAP)


def test_damaged_slices_are_reported_though_ffmpeg_exits_0_with_every_frame(tmp_path):
    units = clip()
    decoded = ffmpeg_decode(write_flv(tmp_path / "bad.flv", damaged(units)), seconds=None)
    # what a check of the exit code and a frame threshold sees: all well
    assert decoded.returncode == 0 and decoded.video_frames == SECONDS * FPS
    # what ffmpeg says on stderr: the damage it concealed
    assert decoded.errors and any("error while decoding MB" in line for line in decoded.errors), decoded.stderr
    with pytest.raises(AssertionError, match="error while decoding MB"):
        assert_clean(decoded, video=SECONDS * FPS, audio=expected_audio(units))


def test_a_lost_frame_leaves_stderr_empty_and_is_caught_by_the_count_and_the_gap(tmp_path):
    units = clip()
    lost = pictures(units)[40]
    assert not lost.keyframe
    decoded = ffmpeg_decode(write_flv(tmp_path / "lost.flv", [u for u in units if u is not lost]), seconds=None)
    assert decoded.returncode == 0 and decoded.errors == []  # ffmpeg is silent about it
    assert decoded.video_frames == SECONDS * FPS - 1
    assert abs(decoded.largest_gap - 2 / FPS) < 0.002, decoded.largest_gap
    with pytest.raises(AssertionError, match="video frames not in"):
        assert_clean(decoded, video=SECONDS * FPS)
    with pytest.raises(AssertionError, match="gap between pictures"):
        assert_clean(decoded, video=(0, SECONDS * FPS), max_gap=FRAME_GAP)


def test_the_live_check_counts_each_track_from_its_start_and_fails_one_lost_picture(tmp_path):
    """A `-t` window as a live viewer reads it: ffmpeg's own FLV starts its video 23 ms after its
    audio, so -t 1.5 keeps 44 pictures, not 45; the check counts from each track's first frame."""
    units = clip()
    decoded = ffmpeg_decode(write_flv(tmp_path / "clean.flv", units), seconds=1.5)
    assert_live(decoded, 1.5)
    lost = pictures(units)[20]
    decoded = ffmpeg_decode(write_flv(tmp_path / "lost.flv", [u for u in units if u is not lost]), seconds=1.5)
    with pytest.raises(AssertionError, match="gap between pictures"):
        assert_live(decoded, 1.5)


def test_ffprobe_and_pyav_report_the_damage_too(tmp_path):
    units = clip()
    bad = write_flv(tmp_path / "bad.flv", damaged(units))
    clean = write_flv(tmp_path / "clean.flv", units)
    probe = [require_tool("ffprobe"), "-v", "error", "-count_frames", "-show_streams", "-of", "json"]
    assert_no_decode_errors(subprocess.run([*probe, clean], capture_output=True, text=True, timeout=60))
    broken = subprocess.run([*probe, bad], capture_output=True, text=True, timeout=60)
    assert broken.returncode == 0
    with pytest.raises(AssertionError, match="error while decoding MB"):
        assert_no_decode_errors(broken)

    level = av.logging.get_level()
    for path, damage in ((clean, False), (bad, True)):
        with pyav_errors() as errors, av.open(path) as container:
            decoded = sum(1 for _ in container.decode(video=0))
        assert decoded == SECONDS * FPS and bool(errors) == damage, errors
        assert not damage or any("error while decoding MB" in e for e in errors), errors
    assert av.logging.get_level() == level  # put back as it was


def test_framemd5_counts_by_media_type_not_by_index():
    out = ("#tb 0: 1/44100\n#media_type 0: audio\n#codec_id 0: pcm_s16le\n"
           "0,          0,          0,     1024,     4096, 0f3c...\n"
           "0,       1024,       1024,     1024,     4096, 0f3c...\n")
    assert framemd5_frames(out) == ({"video": 0, "audio": 2}, [], {"audio": 0.0})


def test_the_live_bound_fails_a_server_that_drops_a_frame_a_second():
    low, high = live_frames(5)
    assert (low, high) == (149, 151)
    assert not low <= 5 * (FPS - 1) <= high
