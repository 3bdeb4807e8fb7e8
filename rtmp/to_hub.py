"""RTMP publisher events -> hub AccessUnits (the RTMP source's mapping, no I/O)."""

from __future__ import annotations

from media.hub.unit import TAG_AUDIO, TAG_DATA, TAG_VIDEO, AccessUnit
from rtmp.codec.flv import parse_audio, parse_video
from rtmp.codec.message import AudioData, DataMessage, Metadata, VideoData

# Data messages forwarded to players besides onMetaData (cue points, captions).
FORWARDED_DATA = frozenset({"onTextData", "onCuePoint", "onCaption", "onCaptionInfo", "onFI"})


def video_unit(ev: VideoData) -> AccessUnit:
    """Raises rtmp.codec.errors.RemoteProtocolError on a truncated payload."""
    info = parse_video(ev.payload)
    return AccessUnit(
        TAG_VIDEO, ev.timestamp, ev.payload,
        keyframe=info.keyframe and not info.is_sequence_header,
        config=info.is_sequence_header,
    )


def audio_unit(ev: AudioData) -> AccessUnit:
    """Every audio frame is a random access point (AAC, MP3, Opus); the stream decides."""
    info = parse_audio(ev.payload)
    return AccessUnit(
        TAG_AUDIO, ev.timestamp, ev.payload,
        keyframe=not info.is_sequence_header, config=info.is_sequence_header,
    )


def metadata_unit(ev: Metadata) -> AccessUnit:
    return AccessUnit(TAG_DATA, ev.timestamp, ev.payload, config=True)


def data_unit(ev: DataMessage) -> AccessUnit | None:
    if ev.name not in FORWARDED_DATA:
        return None
    return AccessUnit(TAG_DATA, ev.timestamp, ev.payload)


def unit_from_event(ev: object) -> AccessUnit | None:
    """The hub unit for a publisher's media event, or None if the event carries none."""
    if isinstance(ev, VideoData):
        return video_unit(ev) if ev.payload else None
    if isinstance(ev, AudioData):
        return audio_unit(ev) if ev.payload else None
    if isinstance(ev, Metadata):
        return metadata_unit(ev)
    if isinstance(ev, DataMessage):
        return data_unit(ev)
    return None
