"""RTMP fan-out: shared format-1 batches, per-player format-0 starts, timestamps from 0."""

from __future__ import annotations

from media.hub.fanout import ACTIVE, PAUSED, WAITING_START
from media.hub.stream import Stream
from rtmp.codec.chunk import ChunkParser
from rtmp.from_hub import CHUNK_SIZE, RtmpFanout, RtmpViewer

from .conftest import (
    Clock,
    FakeTransport,
    audio,
    audio_config,
    av_stream,
    cfg,
    flv_body,
    metadata,
    tag_type,
    video,
    video_config,
)


def parse(data: bytes):
    p = ChunkParser()
    p.set_chunk_size(CHUNK_SIZE)
    return p.feed(data)


def media(msgs):
    return [(m.msg_type, m.timestamp, m.payload) for m in msgs if m.msg_type in (8, 9)]


def start_stream(**kw) -> Stream:
    s = Stream("room1", cfg(**kw), clock=Clock())
    s.write(metadata())
    s.write(video_config())
    s.write(audio_config())
    return s


def feed(s: Stream, units, per_flush: int = 3):
    for i, u in enumerate(units):
        s.write(u)
        if i % per_flush == per_flush - 1:
            s.flush()
    s.flush()


def expected(units, base, *, skip_config=True):
    return [(tag_type(u), u.ms - base, flv_body(u)) for u in units if not (skip_config and u.config)]


def test_players_share_the_same_bytes_objects():
    s = start_stream()
    fan = s.fanout(RtmpFanout)
    viewers = [RtmpViewer(FakeTransport(), stream_id=1) for _ in range(5)]
    for v in viewers:
        fan.add(v)
        assert v.state == WAITING_START
    units = av_stream(0, 3)
    feed(s, units)
    assert all(v.state == ACTIVE for v in viewers)
    writes = [v.transport.writes for v in viewers]
    n = len(writes[0])
    assert all(len(w) == n for w in writes)  # one write per viewer per flush
    # first writes are each viewer's own start; afterwards the very same objects
    shared = sum(1 for i in range(n) if all(w[i] is writes[0][i] for w in writes))
    assert shared >= n - 3
    assert fan.shared_writes > 0
    for v in viewers:
        got = media(parse(v.transport.data()))
        assert got[0][0] == 9 and got[0][2] == flv_body(video_config())
        assert got[2][2] == flv_body(units[0]) and got[2][1] == 0


def test_mid_stream_joiner_timestamps_start_at_zero_and_follow_source_deltas():
    s = start_stream()
    fan = s.fanout(RtmpFanout)
    early = RtmpViewer(FakeTransport(), stream_id=1)
    fan.add(early)
    units = av_stream(0, 10, gop_ms=2000)
    feed(s, units[:700])
    late = RtmpViewer(FakeTransport(), stream_id=3)
    fan.add(late)
    assert late.state == ACTIVE
    gop, base = s.start_entries()
    gop_units = [e.unit for e in gop]
    assert 0 < base <= gop_units[0].ms
    feed(s, units[700:])
    msgs = parse(late.transport.data())
    assert {m.stream_id for m in msgs} == {3}
    got = media(msgs)
    configs = got[:2]
    assert [c[2] for c in configs] == [flv_body(video_config()), flv_body(audio_config())]
    tail = units[units.index(gop_units[0]):]
    assert got[2:] == expected(tail, base)
    assert min(t for _, t, _ in got[2:]) == 0
    # the early viewer got everything from t=0, and the late one shares its bytes
    assert media(parse(early.transport.data()))[2:] == expected(units, 0)
    assert late.transport.writes[-1] is early.transport.writes[-1]


def test_slow_player_skips_to_keyframe_then_resyncs_with_format_0():
    clock = Clock()
    s = Stream("room1", cfg(viewer_max_buffer=10_000), clock=clock)
    s.write(video_config())
    s.write(audio_config())
    fan = s.fanout(RtmpFanout)
    ok = RtmpViewer(FakeTransport(), stream_id=1)
    slow = RtmpViewer(FakeTransport(drains=False), stream_id=1)
    fan.add(ok)
    fan.add(slow)
    units = av_stream(0, 8, gop_ms=1000)
    cut = 300
    feed(s, units[:cut])
    assert slow.state == PAUSED and slow.skips == 1
    assert slow.transport.buffered < 10_000 + 1_000  # bound: max plus one batch
    paused_at = len(slow.transport.writes)
    slow.transport.buffered = 0  # the client drained its socket and keeps up now
    slow.transport.drains = True
    feed(s, units[cut:])
    assert slow.state == ACTIVE
    assert len(slow.transport.writes) > paused_at
    got = media(parse(slow.transport.data()))  # parses: every resumed csid restarted with fmt 0
    by_payload = {flv_body(u): u for u in units}
    # every message it got carries the source timestamp minus its base (0), gap or not
    live = [g for g in got if g[2] in by_payload and not by_payload[g[2]].config]
    assert all(t == by_payload[p].ms for _, t, p in live)
    # after the gap it resumed exactly at a keyframe
    idx = [units.index(by_payload[p]) for _, _, p in live]
    gap = next(i for i in range(1, len(idx)) if idx[i] != idx[i - 1] + 1)
    assert by_payload[live[gap][2]].keyframe
    assert media(parse(ok.transport.data()))[2:] == expected(units, 0)


def test_player_behind_too_long_is_closed():
    clock = Clock()
    s = Stream("room1", cfg(viewer_max_buffer=10_000, viewer_drop_after=5.0), clock=clock)
    fan = s.fanout(RtmpFanout)
    stuck = RtmpViewer(FakeTransport(drains=False), stream_id=1)
    fan.add(stuck)
    units = av_stream(0, 20)
    for i, u in enumerate(units):
        clock.now = 1000 + u.ms / 1000
        s.write(u)
        if i % 3 == 2:
            s.flush()
        if stuck.transport.aborted:
            break
    assert stuck.transport.aborted
    assert fan.dropped_slow == 1 and stuck not in fan.viewers
    assert clock.now - 1000 < 10


def test_negative_delta_clamps_and_data_messages_use_the_players_codec():
    s = start_stream()
    fan = s.fanout(RtmpFanout)
    v = RtmpViewer(FakeTransport(), stream_id=1)
    fan.add(v)
    s.write(video(1000, key=True))
    s.write(audio(1000))
    s.flush()
    s.write(video(990))  # backwards
    s.write(metadata(1010))  # mid-stream metadata: framed per player
    s.write(video(1033))
    s.flush()
    got = [(m.msg_type, m.timestamp) for m in parse(v.transport.data())]
    assert got[-5:] == [(9, 0), (8, 0), (9, 0), (18, 10), (9, 33)]


def test_viewer_leaving_and_stream_end():
    s = start_stream()
    fan = s.fanout(RtmpFanout)
    a, b = RtmpViewer(FakeTransport(), 1), RtmpViewer(FakeTransport(), 1)
    fan.add(a)
    fan.add(b)
    feed(s, av_stream(0, 1))
    assert s.viewer_count == 2 and s.peak_viewers == 2
    fan.remove(a)
    fan.remove(a)
    assert s.viewer_count == 1
    s.close("publisher_left")
    assert b.transport.closing and not fan.viewers
