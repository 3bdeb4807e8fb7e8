"""VP8: key frame detection and picture size from the uncompressed data chunk (RFC 6386 9.1)."""

from __future__ import annotations

from .errors import MalformedData

_START_CODE = b"\x9d\x01\x2a"


def is_keyframe(frame: bytes) -> bool:
    """Whether a VP8 frame is a key frame (a point where a viewer can start decoding)."""
    if len(frame) < 3:
        raise MalformedData(f"VP8 frame too short for a frame tag ({len(frame)} bytes)")
    return not frame[0] & 0x01 and frame[3:6] == _START_CODE


def keyframe_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) of a key frame, None for an inter frame; the 2-bit scaling fields are ignored."""
    if not is_keyframe(frame):
        return None
    if len(frame) < 10:
        raise MalformedData(f"VP8 key frame too short for its dimensions ({len(frame)} bytes)")
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    if not width or not height:
        raise MalformedData(f"VP8 key frame of {width}x{height} pixels")
    return width, height
