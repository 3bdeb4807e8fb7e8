"""HTTP-FLV fan-out: groups by time base, one framing per group per batch, chunked coding."""

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


def test_flv_viewers_grouped_by_base_share_bytes_and_start_at_zero():
    s = start_stream()
    fan = s.fanout(FlvFanout)
    units = av_stream(0, 6, gop_ms=2000)
    a = FlvViewer(FakeTransport())
    fan.add(a)  # waits for the first keyframe
    feed(s, units[:100])
    b = FlvViewer(FakeTransport())  # joins mid-GOP 1
    c = FlvViewer(FakeTransport())  # same GOP: same group as b
    fan.add(b)
    fan.add(c)
    assert b.base == c.base and a.base != b.base
    assert len(fan.groups) == 2
    feed(s, units[100:])
    assert b.transport.writes[-1] is c.transport.writes[-1]
    assert a.transport.writes[-1] is not b.transport.writes[-1]
    for v in (a, b, c):
        body, ended = dechunk(v.transport.data())
        assert not ended
        r = FlvReader()
        tags = r.feed(body)
        assert r.has_audio and r.has_video
        assert [t.tag_type for t in tags[:3]] == [18, 9, 8]
        assert all(t.timestamp == 0 for t in tags[:3])
        media = tags[3:]
        assert media[0].tag_type == 9 and media[0].payload[0] == 0x17  # starts at a keyframe
        assert min(t.timestamp for t in media) == 0
        by_payload = {flv_body(u): u for u in units}
        assert all(t.timestamp == by_payload[t.payload].ms - v.base for t in media)
        first = units.index(by_payload[media[0].payload])
        assert [t.payload for t in media] == [flv_body(u) for u in units[first:]]
    s.close("publisher_left")
    for v in (a, b, c):
        assert dechunk(v.transport.data())[1] and v.transport.closing
    assert not fan.groups


def test_flv_slow_viewer_resumes_in_its_group():
    s = start_stream()
    fan = s.fanout(FlvFanout)
    fan.max_buffer, fan.resume_buffer = 10_000, 5_000
    ok, slow = FlvViewer(FakeTransport()), FlvViewer(FakeTransport(drains=False))
    fan.add(ok)
    fan.add(slow)
    units = av_stream(0, 6, gop_ms=1000)
    feed(s, units[:200])
    assert slow.state != ACTIVE and slow.group is not None
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
