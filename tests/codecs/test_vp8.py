"""VP8 key frame detection against hand-made frame headers and libvpx output."""

from __future__ import annotations

import pytest

from media.codecs import vp8
from media.codecs.errors import MalformedData
from tests.codecs.encoders import vp8_packets


def _keyframe(width: int, height: int, hscale: int = 0, vscale: int = 0) -> bytes:
    tag = b"\x50\x2a\x00"  # key frame, version 0, show_frame, first partition size
    return (
        tag
        + b"\x9d\x01\x2a"
        + (width | hscale << 14).to_bytes(2, "little")
        + (vscale << 14 | height).to_bytes(2, "little")
        + b"\x00" * 8
    )


def test_keyframe_header() -> None:
    frame = _keyframe(640, 360)
    assert vp8.is_keyframe(frame)
    assert vp8.keyframe_size(frame) == (640, 360)
    assert vp8.keyframe_size(bytearray(_keyframe(16383, 1, hscale=3, vscale=2))) == (16383, 1)  # scaling ignored


@pytest.mark.parametrize(
    "frame",
    [
        b"\x51\x2a\x00\x9d\x01\x2a\x80\x02\x68\x01",
        b"\x31\x02\x00",
        b"\x31\x02\x00\xaa\xbb",
        b"\x50\x2a\x00\x9d\x01\x2b",
    ],
)
def test_inter_frames(frame: bytes) -> None:
    assert not vp8.is_keyframe(frame)
    assert vp8.keyframe_size(frame) is None


@pytest.mark.parametrize(
    "frame", [b"", b"\x50", b"\x50\x2a", _keyframe(640, 360)[:9], _keyframe(0, 360), _keyframe(640, 0)]
)
def test_malformed(frame: bytes) -> None:
    with pytest.raises(MalformedData):
        vp8.keyframe_size(frame)


def test_is_keyframe_too_short() -> None:
    with pytest.raises(MalformedData):
        vp8.is_keyframe(b"\x50\x2a")


@pytest.mark.parametrize(("width", "height"), [(320, 240), (640, 360), (641, 361)])
def test_libvpx(width: int, height: int) -> None:
    packets = vp8_packets(width, height)
    assert packets[0][1] and any(not key for _, key in packets)
    for frame, key in packets:
        assert vp8.is_keyframe(frame) == key
        assert vp8.keyframe_size(frame) == ((width, height) if key else None)
