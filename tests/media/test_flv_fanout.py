"""HTTP-FLV fan-out: the stream's timestamps, one framing per batch for every viewer, chunked coding."""

from __future__ import annotations

from media.codecs.flv import FlvReader
from media.flv.from_hub import FlvFanout, FlvViewer, http_chunk
from media.hub.fanout import ACTIVE
from media.hub.stream import Stream

from .conftest import Clock, FakeTransport, audio_config, av_stream, cfg, flv_body, metadata, video_config


def dechunk(data: bytes) -> tuple[bytes, bool]:
    """Body of a chunked message; True if the terminating 0-length chunk was seen."""
    out, pos = bytearray(), 0
    while pos < len(data):
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol], 16)
        if size == 0:
            assert data[eol:] == b"\r\n\r\n"
            return bytes(out), True
        out += data[eol + 2 : eol + 2 + size]
        assert data[eol + 2 + size : eol + 4 + size] == b"\r\n"
        pos = eol + 4 + size
    return bytes(out), False


def start_stream() -> Stream:
    s = Stream("room1", cfg(), clock=Clock())
    s.write(metadata())
    s.write(video_config())
    s.write(audio_config())
    return s


def feed(s, units, per_flush=3):
    for i, u in enumerate(units):
        s.write(u)
        if i % per_flush == per_flush - 1:
            s.flush()
    s.flush()


def test_http_chunk():
    assert http_chunk([b"ab", b"cde"]) == b"5\r\nabcde\r\n"
    assert http_chunk([b"x" * 300]) == b"12c\r\n" + b"x" * 300 + b"\r\n"
    assert http_chunk([]) == b""


def test_flv_viewers_joining_at_different_gops_share_one_framing_with_the_streams_timestamps():
    s = start_stream()
    fan = s.fanout(FlvFanout)
    units = av_stream(0, 6, gop_ms=2000)
    a = FlvViewer(FakeTransport())
    fan.add(a)  # waits for the first keyframe
    feed(s, units[:100])
    b = FlvViewer(FakeTransport())  # joins mid-GOP 1
    fan.add(b)
    feed(s, units[100:200])
    c = FlvViewer(FakeTransport())  # joins in a later GOP
    fan.add(c)
    framings, joined_writes = fan.framings, len(c.transport.writes)
    feed(s, units[200:])
    batches = fan.framings - framings  # once per batch, not once per GOP the viewers joined at
    assert batches == len(c.transport.writes) - joined_writes > 0
    assert all(x is y is z for x, y, z in zip(*(v.transport.writes[-batches:] for v in (a, b, c)), strict=True))
    by_payload = {flv_body(u): u for u in units}
    firsts = []
    for v in (a, b, c):
        body, ended = dechunk(v.transport.data())
        assert not ended
        r = FlvReader()
        tags = r.feed(body)
        assert r.has_audio and r.has_video
        assert [t.tag_type for t in tags[:3]] == [18, 9, 8]
        media = tags[3:]
        assert media[0].tag_type == 9 and media[0].payload[0] == 0x17  # starts at a keyframe
        assert all(t.timestamp == media[0].timestamp for t in tags[:3])  # headers at the first tag's time
        assert all(t.timestamp == by_payload[t.payload].ms for t in media)
        first = units.index(by_payload[media[0].payload])
        assert [t.payload for t in media] == [flv_body(u) for u in units[first:]]
        firsts.append(media[0].timestamp)
    assert firsts[0] == 0 and firsts[0] < firsts[1] < firsts[2]
    s.close("publisher_left")
    for v in (a, b, c):
        assert dechunk(v.transport.data())[1] and v.transport.closing


def test_flv_slow_viewer_resumes_with_the_others():
    s = start_stream()
    fan = s.fanout(FlvFanout)
    fan.max_buffer, fan.resume_buffer = 10_000, 5_000
    ok, slow = FlvViewer(FakeTransport()), FlvViewer(FakeTransport(drains=False))
    fan.add(ok)
    fan.add(slow)
    units = av_stream(0, 6, gop_ms=1000)
    feed(s, units[:200])
    assert slow.state != ACTIVE
    slow.transport.buffered = 0
    slow.transport.drains = True
    feed(s, units[200:])
    assert slow.state == ACTIVE
    assert slow.transport.writes[-1] is ok.transport.writes[-1]
    body, _ = dechunk(slow.transport.data())
    tags = FlvReader().feed(body)[3:]
    by_payload = {flv_body(u): u for u in units}
    assert all(t.timestamp == by_payload[t.payload].ms for t in tags)
    idx = [units.index(by_payload[t.payload]) for t in tags]
    gap = next(i for i in range(1, len(idx)) if idx[i] != idx[i - 1] + 1)
    assert units[idx[gap]].keyframe
