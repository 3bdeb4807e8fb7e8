"""The process-wide registry of live streams, one per room public id.

It is also the media plane's ``MediaControl`` implementation: staff actions (end live, key
rotation) reach ``drop_publisher``, which closes the publisher's connection at once; the
publisher's own end path then closes the stream and reports the session end.

Reconnect grace: a source whose connection dropped without an unpublish ``hold``s its stream
instead of ending it. Viewers and readers stay; the same room publishing again within
``publish_grace`` s ``resume``s it (same stream, same live session); else the stream ends when
the grace is over, with the reason the drop had. A staff drop ends a held stream at once.

A dead connection is not always seen at once (a WebRTC peer's ICE consent runs out after
RTC_PEER_TIMEOUT, a silent TCP peer's after the idle timeout): a live stream whose publisher has
sent nothing for ``publish_takeover_after`` s is ``resumable`` too, and the new publish that
continues it ``take_over``s: the old publisher is treated as lost (its stream held), then resumed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
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

    async def lost(self) -> None:
        """Close the publisher as if its connection had dropped: its stream is held (the grace)."""


@dataclass(slots=True)
class Held:
    """A stream whose publisher dropped, waiting for it: what its session's end needs."""

    stream: Stream
    reason: str  # the end reason if nobody resumes it
    session_id: int
    bytes_received: int  # by the publishes of this session so far
    end_session: Callable[[str, int], None]  # (reason, bytes_received): report the session's end
    timer: asyncio.TimerHandle | None = None


class StreamRegistry:
    def __init__(self, config: MediaConfig) -> None:
        self.config = config
        self._streams: dict[str, Stream] = {}
        self._publishers: dict[str, Publisher] = {}
        self._session_ids: dict[str, int] = {}  # public id -> the live session of its stream, when known
        # Per-stream readers that follow every live stream (the HLS segmenter, recorders).
        self.on_start: list[Callable[[Stream], None]] = []
        self.on_resume: list[Callable[[Stream], None]] = []  # a held stream's new publisher
        self._held: dict[str, Held] = {}
        self.resumed = 0
        self.taken_over = 0  # silent publishers a new publish replaced
        self.started = 0
        self.ended = 0
        self.viewers = ViewerSessions()  # every player of every stream here, any protocol
        self.ended_reasons: Counter[str] = Counter()
        self.publish_refused: Counter[str] = Counter()  # by reason (bad_key, already_live, hook_refused...)
        self.bytes_in_ended = 0  # bytes received by the streams that ended (the live ones count their own)
        self.slow_ended = (0, 0)  # Stream.slow_counts() of the streams that ended

    def start(self, public_id: str, publisher: Publisher | None = None, *, protocol: str = "",
              keyframe_source: Callable[[], None] | None = None, client_addr: str = "",
              session_id: int | None = None) -> Stream:
        """Open the stream of a room; raises StreamAlreadyLive if it has a publisher.

        ``protocol`` names the source ("rtmp", "webrtc"); ``keyframe_source`` asks it for a
        keyframe (None: it cannot, readers start from the GOP cache); ``session_id`` (its live
        session) lets a new publish take over when this one falls silent (``resumable``).
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
        if session_id is not None:
            self._session_ids[public_id] = session_id
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
        self._session_ids.pop(public_id, None)
        held = self._held.pop(public_id, None)
        if held is not None:
            if held.timer is not None:
                held.timer.cancel()
            held.end_session(reason, held.bytes_received)
        self.ended += 1
        self.ended_reasons[reason] += 1
        current.close(reason)
        self.bytes_in_ended += current.bytes_in
        skips, drops = current.slow_counts()
        self.slow_ended = (self.slow_ended[0] + skips, self.slow_ended[1] + drops)
        return current

    # ------------------------------------------------------------- reconnect grace

    def hold(self, public_id: str, stream: Stream, reason: str, *, session_id: int, bytes_received: int,
             end_session: Callable[[str, int], None]) -> bool:
        """Keep the stream open for ``publish_grace`` s after its publisher dropped. False (the
        caller ends it) when the grace is off or the stream is not the registered one."""
        grace = self.config.publish_grace
        if grace <= 0 or self._streams.get(public_id) is not stream or stream.closed:
            return False
        self._publishers.pop(public_id, None)
        stream.hold()
        held = Held(stream, reason, session_id, bytes_received, end_session)
        held.timer = asyncio.get_running_loop().call_later(grace, self._grace_over, public_id, held)
        self._held[public_id] = held
        log.info("stream %s: publisher gone (%s); held %.0f s for a reconnect", public_id, reason, grace)
        return True

    def _grace_over(self, public_id: str, held: Held) -> None:
        if self._held.get(public_id) is not held:
            return
        held.timer = None
        log.info("stream %s: no reconnect within %.0f s; ended (%s)", public_id, self.config.publish_grace,
                 held.reason)
        self.end(public_id, held.reason, stream=held.stream)

    def held_sessions(self) -> dict[str, int]:
        """Rooms whose stream waits for its publisher: public id -> live session id."""
        return {public_id: held.session_id for public_id, held in self._held.items()}

    def resumable(self) -> dict[str, int]:
        """Rooms a new publish may continue (public id -> live session id): the held streams, and
        live ones whose publisher has sent nothing for ``publish_takeover_after`` s."""
        found = self.held_sessions()
        after = self.config.publish_takeover_after
        if self.config.publish_grace > 0 and after > 0:
            for public_id, session_id in self._session_ids.items():
                stream = self._streams[public_id]
                if public_id not in found and public_id in self._publishers and stream.silent_for() >= after:
                    found[public_id] = session_id
        return found

    async def take_over(self, public_id: str) -> None:
        """A publish was granted to continue this room's stream (``resumable``) while its old,
        silent publisher is still here: that one is lost, and its stream held for ``resume``."""
        publisher = self._publishers.get(public_id)
        if publisher is None or public_id in self._held:
            return
        stream = self._streams[public_id]
        log.info("stream %s: its publisher sent nothing for %.1f s; a new publish takes over", public_id,
                 stream.silent_for())
        self.taken_over += 1
        await publisher.lost()

    def resume(self, public_id: str, session_id: int, publisher: Publisher | None = None, *, protocol: str = "",
               keyframe_source: Callable[[], None] | None = None, client_addr: str = "") -> Held | None:
        """A new publisher continues the held stream of this session; None when it is not held
        any more (the grace ended meanwhile, or staff ended it)."""
        held = self._held.get(public_id)
        if held is None or held.session_id != session_id or held.stream.closed:
            return None
        del self._held[public_id]
        if held.timer is not None:
            held.timer.cancel()
            held.timer = None
        stream = held.stream
        stream.resume(protocol=protocol, keyframe_source=keyframe_source, client_addr=client_addr)
        if publisher is not None:
            self._publishers[public_id] = publisher
        self.resumed += 1
        log.info("stream %s: publisher back (%s), the stream continues", public_id, client_addr or protocol)
        for listener in self.on_resume:
            try:
                listener(stream)
            except Exception:
                log.exception("stream %s: a resume listener failed", public_id)
        return held

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
