"""FLV tag bodies <-> hub access units: what RTMP-in, RTMP-out and HTTP-FLV-out share.

``FlvUnits`` turns one publisher's FLV audio/video/script bodies into canonical units (its state
is the AVC NAL length size). ``tag_body(entry)`` is the reverse, computed once per entry and
cached on it, so every RTMP player and FLV viewer of a stream shares the same bytes.

What FLV carries here: H.264 (legacy FLV, codec id 7), HEVC / AV1 / VP9 (Enhanced RTMP FourCC),
AAC, and whatever arrived in FLV's own formats (``flv/NAME``: MP3, Enhanced RTMP Opus, Sorenson,
VP6...: passed through as received). Not VP8, and not a WebRTC publisher's Opus: Debian's
ffmpeg 5.1 and mpegts.js read no Enhanced RTMP audio, so that waits for the Opus -> AAC bridge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from media.hub.unit import AUDIO, DATA, TICKS_PER_MS, VIDEO, AccessUnit

from . import avc, flv
from .errors import MalformedData

if TYPE_CHECKING:
    from media.hub.stream import Entry

TAG_TYPE = {AUDIO: flv.TAG_AUDIO, VIDEO: flv.TAG_VIDEO, DATA: flv.TAG_SCRIPT}
_FOURCC = {"hevc": b"hvc1", "av1": b"av01", "vp9": b"vp09"}
_FRAME_KEY, _FRAME_INTER = 1, 2


def _si24(value: int) -> bytes:
    return (value & 0xFFFFFF).to_bytes(3, "big")


class FlvUnits:
    """One publisher's FLV bodies to units. Raises MalformedData on a truncated body."""

    def __init__(self) -> None:
        self.length_size = 4  # NAL length size of the current AVC configuration

    def video(self, body: bytes, ms: int) -> AccessUnit | None:
        info = flv.parse_video(body)
        dts = ms * TICKS_PER_MS
        if info.codec == "unknown":
            if info.enhanced:
                return None
            # Sorenson H.263, VP6, screen video...: FLV's own, passed through as received.
            return AccessUnit(VIDEO, f"flv/video{body[0] & 0x0F}", dts, dts, bytes(body), keyframe=info.keyframe)
        if info.is_end_of_sequence:
            return None
        if info.enhanced:
            offset = 8 if body[0] & 0x0F == flv.PACKET_CODED_FRAMES and info.codec in ("h264", "hevc") else 5
            if body[0] & 0x0F == flv.PACKET_METADATA:
                return None
        else:
            offset = 5
        payload = bytes(body[offset:])
        if info.is_sequence_header:
            if info.codec == "h264":
                payload = self._avc_config(payload)
            return AccessUnit(VIDEO, info.codec, dts, dts, payload, config=True)
        if info.codec == "h264" and self.length_size != 4:
            payload = avc.nals_to_avcc(avc.split_avcc(payload, self.length_size))
        pts = dts + info.composition_time * TICKS_PER_MS
        return AccessUnit(VIDEO, info.codec, dts, pts, payload, keyframe=info.keyframe)

    def _avc_config(self, record: bytes) -> bytes:
        if len(record) < 7 or record[0] != 1:
            raise MalformedData("bad AVCDecoderConfigurationRecord")
        self.length_size = (record[4] & 0x03) + 1
        if self.length_size == 3:
            raise MalformedData("AVC NAL length size 3 is not allowed")
        if self.length_size != 4:  # canonical: 4-byte lengths
            record = record[:4] + bytes([record[4] | 0x03]) + record[5:]
        return record

    def audio(self, body: bytes, ms: int) -> AccessUnit | None:
        info = flv.parse_audio(body)
        dts = ms * TICKS_PER_MS
        if info.codec == "aac":
            offset = 5 if body[0] >> 4 == 9 else 2  # Enhanced RTMP "mp4a" or legacy
            return AccessUnit(AUDIO, "aac", dts, dts, bytes(body[offset:]),
                              keyframe=not info.is_sequence_header, config=info.is_sequence_header)
        return AccessUnit(AUDIO, f"flv/{info.codec}", dts, dts, bytes(body),
                          keyframe=not info.is_sequence_header, config=info.is_sequence_header)

    @staticmethod
    def script(body: bytes, ms: int, *, metadata: bool) -> AccessUnit:
        dts = ms * TICKS_PER_MS
        return AccessUnit(DATA, "amf0", dts, dts, bytes(body), config=metadata)


def flv_access_units(data: bytes, kinds: tuple[str, ...] = (VIDEO, AUDIO)) -> list[AccessUnit]:
    """The units an RTMP publisher of this whole FLV file writes into the hub (configs included)."""
    mapping, units = FlvUnits(), []
    for tag in flv.FlvReader().feed(data):
        if tag.tag_type == flv.TAG_VIDEO and VIDEO in kinds:
            unit = mapping.video(tag.payload, tag.timestamp)
        elif tag.tag_type == flv.TAG_AUDIO and AUDIO in kinds:
            unit = mapping.audio(tag.payload, tag.timestamp)
        else:
            continue
        if unit is not None:
            units.append(unit)
    return units


def carries(codec: str | None) -> bool:
    """Can an FLV tag carry this codec?"""
    return codec is not None and (codec in ("h264", "aac", "amf0") or codec in _FOURCC or codec.startswith("flv/"))


def unit_tag_body(unit: AccessUnit) -> bytes:
    """The FLV tag body of a unit; b"" when FLV cannot carry its codec."""
    codec = unit.codec
    if codec == "h264":
        if unit.config:
            return b"\x17\x00\x00\x00\x00" + unit.payload
        cts = (unit.pts - unit.dts) // TICKS_PER_MS
        return (b"\x17\x01" if unit.keyframe else b"\x27\x01") + _si24(cts) + unit.payload
    if codec == "aac":
        return (b"\xaf\x00" if unit.config else b"\xaf\x01") + unit.payload
    if codec == "amf0" or codec.startswith("flv/"):
        return unit.payload
    fourcc = _FOURCC.get(codec)
    if fourcc is None:
        return b""
    frame = _FRAME_KEY if unit.keyframe or unit.config else _FRAME_INTER
    if unit.config:
        return bytes([0x80 | frame << 4 | flv.PACKET_SEQUENCE_START]) + fourcc + unit.payload
    head = bytes([0x80 | frame << 4 | flv.PACKET_CODED_FRAMES]) + fourcc
    if codec == "hevc":  # HEVC's coded frames carry a composition time offset, as OBS sends them
        return head + _si24((unit.pts - unit.dts) // TICKS_PER_MS) + unit.payload
    return head + unit.payload


def tag_body(entry: Entry) -> bytes:
    """``unit_tag_body`` of the entry, once per stream (cached on the entry)."""
    body = entry.flv
    if body is None:
        body = entry.flv = unit_tag_body(entry.unit)
    return body
