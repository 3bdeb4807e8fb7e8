from __future__ import annotations

import asyncio

import pytest

from media.hub.fanout import ACTIVE
from media.hub.stream import Stream, StreamClosed
from rtmp.from_hub import RtmpFanout, RtmpViewer

from .conftest import FakeTransport, audio, audio_config, av_stream, cfg, metadata, video, video_config


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
    assert [e.unit.ms for e in gop] == [0, 5, 33]
    assert base == 0
    s.write(video(1000, key=True))
    s.write(audio(990))  # audio slightly behind the keyframe
    gop, base = s.start_entries()
    assert [e.unit.ms for e in gop] == [1000, 990]
    assert base == 990  # nobody's timestamps go negative
    assert s.metadata is not None and s.video_config is not None and s.audio_config is not None
    assert [e.unit.kind for e in s.configs()] == ["data", "video", "audio"]


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
    assert [e.unit.ms for e in gop] == [23]
    assert not s.has_video
    # once video shows up, audio no longer starts a GOP
    s.write(video(40, key=True))
    s.write(audio(46))
    gop, _ = s.start_entries()
    assert [e.unit.ms for e in gop] == [40, 46]


def test_timestamps_made_monotonic_per_track():
    s = Stream("r", cfg())
    s.write(video(100, key=True))
    s.write(video(90))  # backwards: clamps
    s.write(video(133))
    s.write(audio(50))
    s.write(audio(70))
    deltas = [(e.unit.kind, e.ts, e.delta) for e in s.gop]
    assert deltas == [("video", 100, None), ("video", 100, 0), ("video", 133, 33),
                      ("audio", 50, None), ("audio", 70, 20)]
    assert s.gop[1].unit.dts == 100 * 90, "the clamped dts is what every reader gets"


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


def _players(s: Stream, n: int) -> list[RtmpViewer]:
    fan = s.fanout(RtmpFanout)
    viewers = [RtmpViewer(FakeTransport(), stream_id=1) for _ in range(n)]
    for v in viewers:
        fan.add(v)
    return viewers


def test_no_viewers_no_batch_and_no_timer():
    async def run():
        s = Stream("r", cfg())
        for u in av_stream(0, 1):
            s.write(u)
        assert s._pending == [] and s._flush_handle is None and s.flushes == 0
        assert s.start_entries() is not None  # the GOP cache still fills for joiners
        [v] = _players(s, 1)
        assert v.state == ACTIVE and len(v.transport.writes) == 1  # its start
        s.fanout(RtmpFanout).remove(v)
        s.write(video(1000))
        assert s._pending == [] and s._flush_handle is None

    asyncio.run(run())


def test_few_viewers_get_every_unit_at_once():
    s = Stream("r", cfg(hub_flush_now_viewers=2))
    s.write(video(0, key=True))
    viewers = _players(s, 2)
    for i, u in enumerate(av_stream(33, 1)):
        s.write(u)
        assert all(len(v.transport.writes) == 2 + i for v in viewers)  # start, then one write per unit
    assert s._pending == []


def test_many_viewers_are_batched_per_tick():
    async def run():
        s = Stream("r", cfg(hub_flush_now_viewers=2, hub_tick_ms=10))
        s.write(video(0, key=True))
        viewers = _players(s, 3)
        for u in av_stream(33, 0.2):
            s.write(u)
        assert s._flush_handle is not None and all(len(v.transport.writes) == 1 for v in viewers)
        await asyncio.sleep(0.05)
        assert s._pending == [] and all(len(v.transport.writes) == 2 for v in viewers)  # one batch
        s.fanout(RtmpFanout).remove(viewers[2])  # down to a few: no tick any more
        s.write(video(300))
        assert s._flush_handle is None and len(viewers[0].transport.writes) == 3

    asyncio.run(run())


def test_the_keyframe_interval_is_known_and_a_long_one_noted_for_ll_hls():
    from media.runtime import long_gop_note

    s = Stream("r", cfg(llhls_enabled=True, llhls_segment=1.0))
    s.write(video_config())
    s.write(video(0, key=True))
    assert s.keyframe_interval_ms is None and long_gop_note(s) is None
    s.write(video(33))
    s.write(video(2000, key=True))
    s.write(audio(2010))  # audio is no keyframe of the video
    s.write(video(4000, key=True))
    assert s.keyframe_interval_ms == 2000
    assert long_gop_note(s) is None  # up to twice LLHLS_SEGMENT
    s.write(video(7000, key=True))
    note = long_gop_note(s)
    assert note is not None and "keyframes every 3.0 s" in note and "1 s" in note
    assert long_gop_note(Stream("r2", cfg(llhls_enabled=False))) is None
