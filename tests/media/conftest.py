"""Fakes for hub tests: transports, a clock, synthetic FLV/RTMP media."""

from __future__ import annotations

import pytest

from media.config import MediaConfig
from media.hub.unit import AUDIO, DATA, VIDEO, AccessUnit
from rtmp.codec import amf0


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: these tests need no Django."""


class FakeTransport:
    """Records writes (keeping the bytes objects); ``buffered`` simulates the write buffer."""

    def __init__(self, *, drains: bool = True) -> None:
        self.writes: list[bytes] = []
        self.drains = drains
        self.buffered = 0
        self.closing = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closing, "write after close"
        self.writes.append(data)
        if not self.drains:
            self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True
        self.aborted = True

    def data(self) -> bytes:
        return b"".join(self.writes)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cfg(**kw) -> MediaConfig:
    base = dict(hub_tick_ms=20, viewer_max_buffer=1 << 20, viewer_drop_after=5.0, publish_grace=0.0)
    base.update(kw)
    return MediaConfig(**base)


AVC_HEADER = b"\x17\x00\x00\x00\x00" + b"\x01\x64\x00\x1f\xff\xe1\x00\x04SPS!\x01\x00\x03PPS"
AAC_HEADER = b"\xaf\x00\x12\x10"


def video(ts: int, key: bool = False, size: int = 100, tag: int = 0) -> AccessUnit:
    """An H.264 unit at ``ts`` ms; its FLV tag body is the 5-byte AVC header + this payload."""
    body = ts.to_bytes(4, "big") + bytes([tag & 0xFF]) * size
    return AccessUnit(VIDEO, "h264", ts * 90, ts * 90, body, keyframe=key)


def video_config(ts: int = 0) -> AccessUnit:
    return AccessUnit(VIDEO, "h264", ts * 90, ts * 90, AVC_HEADER[5:], config=True)


def audio(ts: int, size: int = 20) -> AccessUnit:
    return AccessUnit(AUDIO, "aac", ts * 90, ts * 90, ts.to_bytes(4, "big") + b"a" * size, keyframe=True)


def audio_config(ts: int = 0) -> AccessUnit:
    return AccessUnit(AUDIO, "aac", ts * 90, ts * 90, AAC_HEADER[2:], config=True)


def metadata(ts: int = 0) -> AccessUnit:
    payload = amf0.encode("onMetaData", amf0.EcmaArray({"width": 640.0}))
    return AccessUnit(DATA, "amf0", ts * 90, ts * 90, payload, config=True)


def flv_body(unit: AccessUnit) -> bytes:
    """The FLV tag body the RTMP/FLV edges send for a unit."""
    from media.codecs.flv_units import unit_tag_body

    return unit_tag_body(unit)


def av_stream(start: int, seconds: float, *, gop_ms: int = 1000, fps: int = 30) -> list[AccessUnit]:
    """Interleaved video (fps) and audio (~43/s) units, keyframe every gop_ms."""
    units = []
    t_end = start + int(seconds * 1000)
    v_step = 1000 / fps
    a_step = 1024 * 1000 / 44100
    vi = ai = 0
    while True:
        vt = start + int(vi * v_step)
        at = start + int(ai * a_step)
        if min(vt, at) >= t_end:
            break
        if vt <= at:
            units.append(video(vt, key=(int(vi * v_step) % gop_ms) < v_step, tag=vi))
            vi += 1
        else:
            units.append(audio(at))
            ai += 1
    return units


def tag_type(unit: AccessUnit) -> int:
    """The FLV tag / RTMP message type a unit goes out as."""
    return {VIDEO: 9, AUDIO: 8, DATA: 18}[unit.kind]
