"""The hub's only currency: one encoded access unit, exactly as FLV/RTMP carries it."""

from __future__ import annotations

from dataclasses import dataclass

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_DATA = 18


@dataclass(frozen=True, slots=True)
class AccessUnit:
    tag_type: int  # 8 audio, 9 video, 18 data (FLV tag type == RTMP message type)
    timestamp: int  # ms, decode time, as the source sent it
    payload: bytes  # the FLV tag body exactly as RTMP carries it
    keyframe: bool = False  # video keyframe; audio units of AAC/MP3/Opus are all random access
    config: bool = False  # sequence header (AVC/HEVC decoder config, AudioSpecificConfig)
