"""The MP4 recorder fed with ffmpeg-encoded units, read back by ffprobe/ffmpeg."""
from __future__ import annotations

import shutil

import pytest

from media.bridges.audio import AacToOpus
from media.hub.unit import AUDIO, TIME_BASE, VIDEO, AccessUnit
from media.record.writer import Mp4Recorder, RecordUnsupported
from tests.support.media import FPS, assert_clean, ffmpeg_decode

from .media_check import (
    decode_errors,
    flv_units,
    hevc_units,
    media,
    picture_types,
    probe,
    record,
    shifted,
    video_timestamps,
)


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: no Django here."""


def test_the_file_decodes_with_every_frame_the_audio_and_the_source_duration(tmp_path):
    units = flv_units(10)
    info = record(tmp_path / "r.mp4", units)
    assert decode_errors(tmp_path / "r.mp4") == ""
    found = probe(tmp_path / "r.mp4")
    video, audio = found["video"], found["audio"]
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 320, 180)
    assert int(video["nb_read_frames"]) == len(media(units))
    assert audio["codec_name"] == "aac" and int(audio["nb_read_frames"]) >= len(media(units, AUDIO)) - 1
    span = (max(u.pts for u in media(units)) - media(units)[0].dts) / TIME_BASE
    assert abs(float(found["format"]["duration"]) - span) <= 0.2
    assert abs(info.duration - span) <= 0.2
    assert (info.video_codec, info.audio_codec, info.width, info.height) == ("h264", "aac", 320, 180)
    assert info.size == (tmp_path / "r.mp4").stat().st_size and info.first_dts == 0
    assert info.last_dts == max(u.dts for u in units)


def test_fragments_are_on_disk_before_close(tmp_path):
    """A crash loses at most the open fragment: a copy taken while recording plays."""
    path, copy = tmp_path / "r.mp4", tmp_path / "copy.mp4"
    recorder = Mp4Recorder(path, flush_every=2.0)
    units = flv_units(10)
    for unit in units:
        if unit.dts > 6 * TIME_BASE and not copy.exists():
            shutil.copyfile(path, copy)
        recorder.write(unit)
    assert float(probe(copy)["format"]["duration"]) >= 4.0
    # the copy holds the pictures of its fragments (2 s each: 4 to 6 s of the 6 written), every one
    assert_clean(ffmpeg_decode(str(copy), seconds=None), video=(4 * FPS, 6 * FPS), max_gap=1.5 / FPS)
    recorder.close()
    assert float(probe(path)["format"]["duration"]) > 9.5
    assert_clean(ffmpeg_decode(str(path), seconds=None), video=len(media(units)), max_gap=1.5 / FPS)


def test_b_frames_keep_their_decode_and_presentation_times(tmp_path):
    units = flv_units(4, bframes=2)
    record(tmp_path / "r.mp4", units)
    frames = media(units)
    assert video_timestamps(tmp_path / "r.mp4") == [(u.dts, u.pts) for u in frames]
    assert any(u.pts != u.dts for u in frames)
    types = picture_types(tmp_path / "r.mp4")
    assert len(types) == len(frames) and "B" in types and types[0] == "I"
    assert decode_errors(tmp_path / "r.mp4") == ""


def test_the_file_starts_at_the_first_keyframe_at_time_zero(tmp_path):
    units = shifted(flv_units(4), 5 * TIME_BASE)
    frames = media(units)
    late = [u for u in units if u.config] + [u for u in units if not u.config and u.dts >= frames[10].dts]
    info = record(tmp_path / "r.mp4", late)  # joins mid-GOP: the frames before the next keyframe are left out
    first_key = next(u for u in late if u.kind == VIDEO and u.keyframe and not u.config)
    assert info.first_dts == first_key.dts
    assert video_timestamps(tmp_path / "r.mp4")[0] == (0, first_key.pts - first_key.dts)
    assert int(probe(tmp_path / "r.mp4")["video"]["nb_read_frames"]) == \
        len([u for u in frames if u.dts >= first_key.dts])
    assert decode_errors(tmp_path / "r.mp4") == ""


def test_opus_audio_is_recorded_as_it_is(tmp_path):
    units = flv_units(4)
    bridge = AacToOpus(next(u for u in units if u.kind == AUDIO and u.config).payload)
    opus = [o for u in media(units, AUDIO) for o in bridge.feed(u)]  # no OpusHead: the recorder makes one
    info = record(tmp_path / "r.mp4", sorted([u for u in units if u.kind == VIDEO] + opus, key=lambda u: u.dts))
    found = probe(tmp_path / "r.mp4")
    assert info.audio_codec == "opus" and found["audio"]["codec_name"] == "opus"
    assert int(found["audio"]["nb_read_frames"]) >= len(opus) - 2
    assert decode_errors(tmp_path / "r.mp4") == ""


def test_hevc_video_only(tmp_path):
    units = list(hevc_units())
    info = record(tmp_path / "r.mp4", units)
    found = probe(tmp_path / "r.mp4")
    assert (found["video"]["codec_name"], found["video"]["codec_tag_string"]) == ("hevc", "hvc1")
    assert int(found["video"]["nb_read_frames"]) == len(units) - 1 and "audio" not in found
    assert (info.video_codec, info.audio_codec, info.width, info.height) == ("hevc", None, 320, 180)
    assert decode_errors(tmp_path / "r.mp4") == ""


def test_a_resent_configuration_is_ignored_and_a_new_picture_size_ends_the_file(tmp_path):
    first, second = flv_units(3), flv_units(2, size="640x360")
    offset = max(u.dts for u in first) + TIME_BASE // 30
    recorder = Mp4Recorder(tmp_path / "r.mp4")
    for unit in first + [u for u in first if u.config]:
        recorder.write(unit)
    assert recorder.ended is None
    for unit in shifted(second, offset):
        recorder.write(unit)
    assert recorder.ended == "config_changed"
    info = recorder.close()
    assert info is not None and (info.width, info.height) == (320, 180)
    assert int(probe(tmp_path / "r.mp4")["video"]["nb_read_frames"]) == len(media(first))
    assert decode_errors(tmp_path / "r.mp4") == ""


def test_new_parameter_sets_of_the_same_size_travel_in_band(tmp_path):
    first, second = flv_units(2), flv_units(2, bframes=0)  # another x264 setup, the same picture size
    assert first[0].payload != second[0].payload
    offset = max(u.dts for u in first) + TIME_BASE // 30
    recorder = Mp4Recorder(tmp_path / "r.mp4")
    for unit in first + shifted(second, offset):
        recorder.write(unit)
    assert recorder.ended is None
    recorder.close()
    assert int(probe(tmp_path / "r.mp4")["video"]["nb_read_frames"]) == len(media(first)) + len(media(second))
    assert decode_errors(tmp_path / "r.mp4") == ""


def test_nothing_recorded_without_a_keyframe_and_unsupported_video_refused(tmp_path):
    recorder = Mp4Recorder(tmp_path / "r.mp4")
    for unit in [u for u in flv_units(3) if u.config or u.kind == AUDIO]:
        recorder.write(unit)
    assert recorder.close() is None and not (tmp_path / "r.mp4").exists()
    with pytest.raises(RecordUnsupported):
        Mp4Recorder(tmp_path / "v.mp4").write(AccessUnit(VIDEO, "vp8", 0, 0, b"\x10\x02\x00", keyframe=True))
