"""The process-wide registry of live streams, one per room public id.

It is also the media plane's ``MediaControl`` implementation: staff actions (end live, key
rotation) reach ``drop_publisher``, which closes the publisher's connection at once; the
publisher's own end path then closes the stream and reports the session end.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .stream import Stream
from .viewers import ViewerSessions

if TYPE_CHECKING:
    from ..config import MediaConfig

log = logging.getLogger(__name__)


class StreamAlreadyLive(Exception):
    """A second publisher for a room that already has one."""

    def __init__(self, public_id: str) -> None:
        super().__init__(f"stream {public_id!r} already has a publisher")
        self.public_id = public_id


class Publisher(Protocol):
    """What the registry needs from a stream's source (an RTMP or WebRTC publisher)."""

    def drop(self, reason: str) -> None:
        """Close the publisher now and end its session with ``reason``."""


class StreamRegistry:
    def __init__(self, config: MediaConfig) -> None:
        self.config = config
        self._streams: dict[str, Stream] = {}
        self._publishers: dict[str, Publisher] = {}
        # Per-stream readers that follow every live stream (the HLS segmenter, recorders).
        self.on_start: list[Callable[[Stream], None]] = []
        self.started = 0
        self.ended = 0
        self.viewers = ViewerSessions()  # every player of every stream here, any protocol
        self.ended_reasons: Counter[str] = Counter()
        self.publish_refused: Counter[str] = Counter()  # by reason (bad_key, already_live, hook_refused...)
        self.bytes_in_ended = 0  # bytes received by the streams that ended (the live ones count their own)
        self.slow_ended = (0, 0)  # Stream.slow_counts() of the streams that ended

    def start(self, public_id: str, publisher: Publisher | None = None, *, protocol: str = "",
              keyframe_source: Callable[[], None] | None = None, client_addr: str = "") -> Stream:
        """Open the stream of a room; raises StreamAlreadyLive if it has a publisher.

        ``protocol`` names the source ("rtmp", "webrtc"); ``keyframe_source`` asks it for a
        keyframe (None: it cannot, readers start from the GOP cache).
        """
        if public_id in self._streams:
            raise StreamAlreadyLive(public_id)
        stream = Stream(public_id, self.config)
        stream.source_protocol = protocol
        stream.source_addr = client_addr
        stream.keyframe_source = keyframe_source
        self._streams[public_id] = stream
        if publisher is not None:
            self._publishers[public_id] = publisher
        self.started += 1
        for listener in self.on_start:
            try:
                listener(stream)
            except Exception:
                log.exception("stream %s: a start listener failed", public_id)
        return stream

    def get(self, public_id: str) -> Stream | None:
        return self._streams.get(public_id)

    def end(self, public_id: str, reason: str, *, stream: Stream | None = None) -> Stream | None:
        """Close the room's stream (every viewer and reader ends). With ``stream``, only if the
        registered stream is that one (a late end from an old publisher never ends a new one).
        """
        current = self._streams.get(public_id)
        if current is None or (stream is not None and current is not stream):
            return None
        del self._streams[public_id]
        self._publishers.pop(public_id, None)
        self.ended += 1
        self.ended_reasons[reason] += 1
        current.close(reason)
        self.bytes_in_ended += current.bytes_in
        skips, drops = current.slow_counts()
        self.slow_ended = (self.slow_ended[0] + skips, self.slow_ended[1] + drops)
        return current

    def streams(self) -> list[Stream]:
        return list(self._streams.values())

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, public_id: object) -> bool:
        return public_id in self._streams

    def close_all(self, reason: str) -> None:
        for public_id in list(self._streams):
            publisher = self._publishers.get(public_id)
            if publisher is not None:
                publisher.drop(reason)
            self.end(public_id, reason)

    # ------------------------------------------------------------- MediaControl

    async def drop_publisher(self, public_id: str, reason: str) -> bool:
        """Staff action: close the room's publisher now. False if it was not live here."""
        publisher = self._publishers.get(public_id)
        if publisher is None:
            stream = self._streams.get(public_id)
            if stream is None:
                return False
            log.info("stream %s: dropped by staff (%s), no publisher handle", public_id, reason)
            self.end(public_id, reason)
            return True
        log.info("stream %s: dropping the publisher (%s)", public_id, reason)
        publisher.drop(reason)
        # The publisher's end path removes the stream; make sure, whatever it did.
        self.end(public_id, reason)
        return True
