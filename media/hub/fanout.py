"""Per-viewer readers without a task or a queue: the transport's write buffer is the bound.

A ``Fanout`` holds the viewers of one framing kind (RTMP, FLV) for one stream. Every tick the
stream hands it the batch of entries; it frames them once (per kind, or per time-base group)
and writes the same joined bytes object into each viewer's transport with one ``write``.

The bound (FANOUT.md): before writing, the transport's buffer is checked. Above
``viewer_max_buffer`` the viewer is paused (nothing written to it); at the next random access
point, once its buffer has drained below half, it resumes there. A viewer that stays paused and
undrained for more than ``viewer_drop_after`` seconds is closed. Memory never grows with a slow
viewer: at most ``viewer_max_buffer`` plus one batch sits in its buffer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .stream import Entry, Stream

log = logging.getLogger(__name__)

ACTIVE = 0  # receiving the live batches
WAITING_START = 1  # joined before any keyframe: starts at the next one
PAUSED = 2  # skipped after its buffer overflowed: resumes at a keyframe once drained


class Viewer:
    """One viewer's state in a fan-out. Subclasses add the protocol's end-of-stream bytes.

    ``transport`` needs ``write``, ``get_write_buffer_size``, ``is_closing``, ``close`` and
    ``abort`` (an ``asyncio.Transport``).
    """

    __slots__ = ("transport", "state", "behind_since", "base", "config_gen", "fanout", "skips", "sent",
                 "__weakref__")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.state = WAITING_START
        self.behind_since: float | None = None
        self.base = 0  # the stream timestamp that is this viewer's 0
        self.config_gen = -1
        self.fanout: Fanout | None = None
        self.skips = 0
        self.sent = 0  # bytes of media written to it (for the stats; one add per batch)

    def stream_ended(self, reason: str) -> None:
        """The publisher left: write the protocol's end and close gracefully."""
        self.transport.close()

    def dropped_slow(self) -> None:
        """Closed for being too slow: abort (its buffer may never drain)."""
        self.transport.abort()


class Fanout:
    """Base of the RTMP and FLV fan-outs: viewer bookkeeping and the buffer policy."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.viewers: list[Viewer] = []
        self.waiting = 0  # viewers in WAITING_START or PAUSED
        cfg = stream.config
        self.max_buffer = cfg.viewer_max_buffer
        self.resume_buffer = cfg.viewer_max_buffer // 2
        self.drop_after = cfg.viewer_drop_after
        self.dropped_slow = 0
        self.skipped = 0

    # --------------------------------------------------------------- hooks for subclasses

    def start_bytes(self, viewer: Viewer, gop: list[Entry], base: int) -> bytes:
        """A joining viewer's start: header, metadata, sequence headers, the GOP cache."""
        raise NotImplementedError

    def late_start_bytes(self, viewer: Viewer, rap: Entry) -> bytes:
        """Start of a viewer that waited for a keyframe (``rap`` follows in the next batch)."""
        raise NotImplementedError

    def resume_bytes(self, viewer: Viewer, rap: Entry) -> bytes:
        """What a paused viewer needs before the batch starting at ``rap`` (changed configs)."""
        raise NotImplementedError

    def send(self, batch: list[Entry], now: float) -> None:
        raise NotImplementedError

    def on_added(self, viewer: Viewer) -> None:
        """Subclass bookkeeping when a viewer becomes active (e.g. its FLV group)."""

    def on_removed(self, viewer: Viewer) -> None:
        """Subclass bookkeeping when a viewer leaves."""

    # --------------------------------------------------------------- membership

    def add(self, viewer: Viewer) -> None:
        """Join a viewer: it gets its start bytes now, or at the next keyframe."""
        stream = self.stream
        stream.flush()  # everything in the GOP cache has now gone to the live viewers
        viewer.fanout = self
        start = stream.start_entries()
        if start is None:
            viewer.state = WAITING_START
            self.waiting += 1
            stream.request_keyframe()
        else:
            gop, base = start
            viewer.base = base
            viewer.config_gen = stream.config_gen
            viewer.state = ACTIVE
            data = self.start_bytes(viewer, gop, base)
            viewer.sent += len(data)
            viewer.transport.write(data)
        self.viewers.append(viewer)
        self.on_added(viewer)
        stream.viewers_changed()

    def remove(self, viewer: Viewer) -> None:
        """The viewer left (its connection closed). Idempotent."""
        if viewer.fanout is not self:
            return
        viewer.fanout = None
        try:
            self.viewers.remove(viewer)
        except ValueError:
            return
        if viewer.state != ACTIVE:
            self.waiting -= 1
        self.on_removed(viewer)
        self.stream.viewers_changed()

    def waiting_ready(self) -> bool:
        """Is any waiting viewer able to start at a keyframe now?"""
        if not self.waiting:
            return False
        for v in self.viewers:
            if v.state == WAITING_START:
                return True
            if v.state == PAUSED and v.transport.get_write_buffer_size() <= self.resume_buffer:
                return True
        return False

    def activate_waiting(self, rap: Entry) -> None:
        """At a batch boundary before ``rap``: let ready waiting viewers in."""
        stream = self.stream
        for v in self.viewers:
            st = v.state
            if st == ACTIVE:
                continue
            t = v.transport
            if st == WAITING_START:
                v.base = rap.ts
                v.config_gen = stream.config_gen
                data = self.late_start_bytes(v, rap)
                v.sent += len(data)
                t.write(data)
            else:
                if t.get_write_buffer_size() > self.resume_buffer:
                    continue
                data = self.resume_bytes(v, rap)
                v.config_gen = stream.config_gen
                if data:
                    v.sent += len(data)
                    t.write(data)
            v.state = ACTIVE
            v.behind_since = None
            self.waiting -= 1
            self.on_resumed(v)

    def on_resumed(self, viewer: Viewer) -> None:
        """Subclass bookkeeping when a waiting viewer becomes active at a keyframe."""

    # --------------------------------------------------------------- the buffer policy

    def pause(self, viewer: Viewer, now: float) -> None:
        viewer.state = PAUSED
        viewer.behind_since = now
        viewer.skips += 1
        self.waiting += 1
        self.skipped += 1
        self.on_paused(viewer)
        self.stream.request_keyframe()

    def on_paused(self, viewer: Viewer) -> None:
        """Subclass bookkeeping when a viewer stops receiving (e.g. RTMP resync)."""

    def check_paused(self, viewer: Viewer, now: float) -> bool:
        """Called on a paused viewer each batch; returns False if it was dropped."""
        if viewer.state != PAUSED:
            return True
        if viewer.transport.get_write_buffer_size() <= self.resume_buffer:
            viewer.behind_since = None  # drained: it only waits for a keyframe now
            return True
        if viewer.behind_since is None:
            viewer.behind_since = now
        elif now - viewer.behind_since > self.drop_after:
            self.dropped_slow += 1
            log.info(
                "stream %s: viewer behind for %.1f s, closing it", self.stream.public_id, now - viewer.behind_since
            )
            self.remove(viewer)
            viewer.dropped_slow()
            return False
        return True

    def write_all(self, viewers: list[Viewer], shared: bytes | None, batch: list[Entry], now: float) -> None:
        """The hot loop: one write of ``shared`` per active viewer that can take it."""
        limit = self.max_buffer
        stale: list[Viewer] | None = None
        for v in viewers:
            if v.state != ACTIVE:
                if v.state == PAUSED:
                    if stale is None:
                        stale = []
                    stale.append(v)
                continue
            t = v.transport
            if t.get_write_buffer_size() > limit:
                self.pause(v, now)
                continue
            if shared is not None and self.is_synced(v, batch):
                v.sent += len(shared)
                t.write(shared)
            else:
                data = self.viewer_bytes(v, batch)
                v.sent += len(data)
                t.write(data)
        if stale:
            for v in stale:
                self.check_paused(v, now)

    def is_synced(self, viewer: Viewer, batch: list[Entry]) -> bool:
        return True

    def viewer_bytes(self, viewer: Viewer, batch: list[Entry]) -> bytes:
        raise NotImplementedError

    # --------------------------------------------------------------- end

    def close_all(self, reason: str) -> None:
        viewers, self.viewers = self.viewers, []
        self.waiting = 0
        for v in viewers:
            v.fanout = None
            self.on_removed(v)
            try:
                v.stream_ended(reason)
            except Exception:
                log.exception("stream %s: ending a viewer failed", self.stream.public_id)
