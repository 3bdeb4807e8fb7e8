"""RTMP publisher events -> hub AccessUnits (the RTMP source's edge, no I/O)."""

from __future__ import annotations

from media.codecs.flv_units import FlvUnits
from media.hub.unit import AccessUnit
from rtmp.codec.message import AudioData, DataMessage, Metadata, VideoData

# Data messages forwarded to players besides onMetaData (cue points, captions).
FORWARDED_DATA = frozenset({"onTextData", "onCuePoint", "onCaption", "onCaptionInfo", "onFI"})


class RtmpToHub:
    """One publisher's mapping (it keeps the AVC configuration's NAL length size)."""

    def __init__(self) -> None:
        self._units = FlvUnits()

    def unit(self, ev: object) -> AccessUnit | None:
        """The hub unit for a media event, or None if it carries none.

        Raises media.codecs.errors.MalformedData on a truncated payload.
        """
        if isinstance(ev, VideoData):
            return self._units.video(ev.payload, ev.timestamp) if ev.payload else None
        if isinstance(ev, AudioData):
            return self._units.audio(ev.payload, ev.timestamp) if ev.payload else None
        if isinstance(ev, Metadata):
            return self._units.script(ev.payload, ev.timestamp, metadata=True)
        if isinstance(ev, DataMessage) and ev.name in FORWARDED_DATA:
            return self._units.script(ev.payload, ev.timestamp, metadata=False)
        return None
