"""FLV: codec-level parsing of RTMP audio/video payloads and FLV file framing."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import MalformedData

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT = 18

# Enhanced RTMP video packet types.
PACKET_SEQUENCE_START = 0
PACKET_CODED_FRAMES = 1
PACKET_SEQUENCE_END = 2
PACKET_CODED_FRAMES_X = 3
PACKET_METADATA = 4
PACKET_MPEG2TS_SEQUENCE_START = 5

_LEGACY_VIDEO = {7: "h264", 12: "hevc", 13: "av1"}  # 12/13: widespread non-Adobe ids
_FOURCC_VIDEO = {b"avc1": "h264", b"hvc1": "hevc", b"av01": "av1", b"vp09": "vp9"}
_LEGACY_AUDIO = {
    2: "mp3",
    14: "mp3",
    10: "aac",
    11: "speex",
    7: "pcma",
    8: "pcmu",
    0: "pcm",
    3: "pcm",
    1: "adpcm",
    4: "nellymoser",
    5: "nellymoser",
    6: "nellymoser",
}
_FOURCC_AUDIO = {
    b"Opus": "opus",
    b"fLaC": "flac",
    b"ac-3": "ac3",
    b"ec-3": "eac3",
    b".mp3": "mp3",
    b"mp4a": "aac",
}
_AUDIO_EX_HEADER = 9


@dataclass(frozen=True, slots=True)
class VideoInfo:
    codec: str
    keyframe: bool
    is_sequence_header: bool
    is_end_of_sequence: bool
    composition_time: int
    enhanced: bool


@dataclass(frozen=True, slots=True)
class AudioInfo:
    codec: str
    is_sequence_header: bool


def _si24(data: bytes, pos: int) -> int:
    value = int.from_bytes(data[pos : pos + 3], "big")
    return value - (1 << 24) if value & 0x800000 else value


def _need(payload: bytes, n: int, what: str) -> None:
    if len(payload) < n:
        raise MalformedData(f"{what} payload too short ({len(payload)} < {n} bytes)")


def parse_video(payload: bytes) -> VideoInfo:
    """Classify an RTMP video message body (legacy FLV or Enhanced RTMP)."""
    _need(payload, 1, "video")
    b0 = payload[0]
    if b0 & 0x80:
        return _parse_enhanced_video(payload)
    keyframe = b0 >> 4 == 1
    codec = _LEGACY_VIDEO.get(b0 & 0x0F, "unknown")
    if codec == "unknown":
        return VideoInfo(codec, keyframe, False, False, 0, False)
    _need(payload, 5, "video")
    packet_type = payload[1]
    return VideoInfo(codec, keyframe, packet_type == 0, packet_type == 2, _si24(payload, 2), False)


def _parse_enhanced_video(payload: bytes) -> VideoInfo:
    _need(payload, 5, "enhanced video")
    b0 = payload[0]
    keyframe = (b0 >> 4) & 0x07 == 1
    packet_type = b0 & 0x0F
    codec = _FOURCC_VIDEO.get(bytes(payload[1:5]), "unknown")
    composition_time = 0
    if packet_type == PACKET_CODED_FRAMES and codec in ("h264", "hevc"):
        _need(payload, 8, "enhanced video")
        composition_time = _si24(payload, 5)
    is_header = packet_type in (PACKET_SEQUENCE_START, PACKET_MPEG2TS_SEQUENCE_START)
    return VideoInfo(codec, keyframe, is_header, packet_type == PACKET_SEQUENCE_END, composition_time, True)


def parse_audio(payload: bytes) -> AudioInfo:
    """Classify an RTMP audio message body (legacy FLV or Enhanced RTMP audio)."""
    _need(payload, 1, "audio")
    sound_format = payload[0] >> 4
    if sound_format == _AUDIO_EX_HEADER:
        _need(payload, 5, "enhanced audio")
        codec = _FOURCC_AUDIO.get(bytes(payload[1:5]), "unknown")
        return AudioInfo(codec, payload[0] & 0x0F == PACKET_SEQUENCE_START)
    codec = _LEGACY_AUDIO.get(sound_format, "unknown")
    if codec == "aac":
        _need(payload, 2, "AAC audio")
        return AudioInfo(codec, payload[1] == 0)
    return AudioInfo(codec, False)


# --- FLV file framing ------------------------------------------------------------


def flv_header(*, audio: bool, video: bool) -> bytes:
    """9-byte FLV header followed by PreviousTagSize0 (13 bytes)."""
    flags = (0x04 if audio else 0) | (0x01 if video else 0)
    return b"FLV\x01" + bytes((flags,)) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00"


FLV_HEADER_AUDIO_VIDEO = flv_header(audio=True, video=True)


def flv_tag_header(tag_type: int, timestamp: int, size: int) -> bytes:
    """The 11-byte tag header (so a body can be shared between writers)."""
    if size > 0xFFFFFF:
        raise ValueError("FLV tag body larger than 16 MiB - 1")
    timestamp &= 0xFFFFFFFF
    return struct.pack(
        ">BHBHBBHB",
        tag_type,
        size >> 8,
        size & 0xFF,
        (timestamp >> 8) & 0xFFFF,
        timestamp & 0xFF,
        timestamp >> 24,
        0,
        0,  # stream id (24 bits, always 0)
    )


def flv_tag(tag_type: int, timestamp: int, payload: bytes) -> bytes:
    """Tag header + body + PreviousTagSize."""
    size = len(payload)
    return b"".join((flv_tag_header(tag_type, timestamp, size), payload, struct.pack(">I", size + 11)))


@dataclass(frozen=True, slots=True)
class FlvTag:
    tag_type: int
    timestamp: int
    payload: bytes


class FlvReader:
    """Sans-I/O FLV stream parser: feed() bytes, get complete tags."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._header_done = False
        self.has_audio = False
        self.has_video = False

    def feed(self, data: bytes) -> list[FlvTag]:
        self._buf += data
        tags: list[FlvTag] = []
        pos = self._read_header() if not self._header_done else 0
        buf = self._buf
        while self._header_done and len(buf) - pos >= 11:
            size = int.from_bytes(buf[pos + 1 : pos + 4], "big")
            end = pos + 11 + size + 4
            if len(buf) < end:
                break
            ts = int.from_bytes(buf[pos + 4 : pos + 7], "big") | buf[pos + 7] << 24
            tags.append(FlvTag(buf[pos] & 0x1F, ts, bytes(buf[pos + 11 : end - 4])))
            pos = end
        del buf[:pos]
        return tags

    def _read_header(self) -> int:
        buf = self._buf
        if buf[:3] != b"FLV"[: len(buf[:3])]:
            raise MalformedData("not an FLV stream")
        if len(buf) < 9:
            return 0
        offset = int.from_bytes(buf[5:9], "big")
        if not 9 <= offset <= 1024:
            raise MalformedData(f"bad FLV header size {offset}")
        if len(buf) < offset + 4:
            return 0
        self.has_audio, self.has_video = bool(buf[4] & 0x04), bool(buf[4] & 0x01)
        self._header_done = True
        return offset + 4  # header + PreviousTagSize0
