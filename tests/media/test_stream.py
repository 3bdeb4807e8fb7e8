from __future__ import annotations

import pytest

from media.hub.stream import Stream, StreamClosed
from media.hub.unit import TAG_AUDIO, TAG_VIDEO

from .conftest import audio, audio_config, av_stream, cfg, metadata, video, video_config


def test_gop_cache_holds_units_since_last_keyframe():
    s = Stream("r", cfg())
    s.write(metadata())
    s.write(video_config())
    s.write(audio_config())
    assert s.start_entries() is None  # no keyframe yet
    s.write(video(0, key=True))
    s.write(audio(5))
    s.write(video(33))
    gop, base = s.start_entries()
    assert [e.unit.timestamp for e in gop] == [0, 5, 33]
    assert base == 0
    s.write(video(1000, key=True))
    s.write(audio(990))  # audio slightly behind the keyframe
    gop, base = s.start_entries()
    assert [e.unit.timestamp for e in gop] == [1000, 990]
    assert base == 990  # nobody's timestamps go negative
    assert s.metadata is not None and s.video_config is not None and s.audio_config is not None
    assert [e.unit.tag_type for e in s.configs()] == [18, TAG_VIDEO, TAG_AUDIO]


def test_gop_cache_is_bounded():
    s = Stream("r", cfg(gop_cache_max_bytes=10_000, gop_cache_max_units=1000))
    s.write(video(0, key=True, size=100))
    for i in range(1, 200):
        s.write(video(i * 33, size=100))
    assert s.gop is None and s.gop_overflows == 1
    assert s.start_entries() is None
    s.write(video(99_000, key=True))
    assert len(s.gop) == 1
    s2 = Stream("r", cfg(gop_cache_max_units=10))
    s2.write(video(0, key=True))
    for i in range(1, 12):
        s2.write(video(i))
    assert s2.gop is None


def test_audio_only_stream_starts_at_any_audio_unit():
    s = Stream("r", cfg())
    s.write(audio_config())
    s.write(audio(0))
    s.write(audio(23))
    gop, base = s.start_entries()
    assert [e.unit.timestamp for e in gop] == [23]
    assert not s.has_video
    # once video shows up, audio no longer starts a GOP
    s.write(video(40, key=True))
    s.write(audio(46))
    gop, _ = s.start_entries()
    assert [e.unit.timestamp for e in gop] == [40, 46]


def test_timestamps_made_monotonic_per_track():
    s = Stream("r", cfg())
    s.write(video(100, key=True))
    s.write(video(90))  # backwards: clamps
    s.write(video(133))
    s.write(audio(50))
    s.write(audio(70))
    deltas = [(e.unit.tag_type, e.ts, e.delta) for e in s.gop]
    assert deltas == [(9, 100, None), (9, 100, 0), (9, 133, 33), (8, 50, None), (8, 70, 20)]


def test_counters_and_close():
    s = Stream("r", cfg())
    units = av_stream(0, 2)
    for u in units:
        s.write(u)
    assert s.units_in == len(units)
    assert s.bytes_in == sum(len(u.payload) for u in units)
    s.close("publisher_left")
    assert s.closed and s.close_reason == "publisher_left"
    with pytest.raises(StreamClosed):
        s.write(video(5000, key=True))
    s.close("again")  # idempotent
    assert s.close_reason == "publisher_left"
