"""A per-stream reader's bounded queue (HLS muxer, recorder, bridges).

The stream offers entries synchronously; the reader's own task drains them. The stream never
waits: when the queue is full the unit is dropped and counted, and the reader skips everything
up to the next random access point (a hole inside a GOP breaks the picture), where it resumes,
with the sequence headers again if they changed meanwhile.

A reader that hops to a thread per wakeup (HLS, recording, bridges) sets ``gather_ms``: its task
is woken once that much media has queued, at a keyframe and at the unit after it, or at the end,
not per unit, so a stream costs a few wakeups and thread hops a second instead of one per unit,
with no timer. The unit after a keyframe wakes it too because FFmpeg's interleaving muxer (HLS,
recording) writes the keyframe that ends a segment only once the other track's next packet is in.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .unit import AccessUnit

if TYPE_CHECKING:
    from .stream import Entry, Stream

log = logging.getLogger(__name__)


class StreamReader:
    def __init__(self, stream: Stream, name: str, max_units: int, gather_ms: int = 0) -> None:
        if max_units < 1:
            raise ValueError("max_units must be >= 1")
        self.stream = stream
        self.name = name
        self.max_units = max_units
        self._queue: deque[AccessUnit] = deque()
        self._wakeup = asyncio.Event()
        self._gather_ms = gather_ms
        self._gather_from: int | None = None  # ts (ms) of the first unit queued since the last wakeup
        self._after_rap = False  # the last unit queued was a random access point
        self._skipping = False
        self._config_gen = stream.config_gen
        self.ended = False
        self.end_reason: str | None = None
        self.dropped = 0  # units dropped because the queue was full or while skipping to a keyframe
        self.overflows = 0  # times the queue overflowed
        self.delivered = 0

    # ------------------------------------------------------------- stream side (sync)

    def prime(self, entries: list[Entry], *, synced: bool) -> None:
        for e in entries[: self.max_units]:
            self._queue.append(e.unit)
        self._skipping = not synced
        self._config_gen = self.stream.config_gen
        if self._queue:
            self._wakeup.set()

    def offer(self, entry: Entry) -> None:
        if self.ended:
            return
        q = self._queue
        if self._skipping:
            if not entry.rap or len(q) + 3 > self.max_units:
                if not entry.unit.config:
                    self.dropped += 1
                return
            self._skipping = False
            if self._config_gen != self.stream.config_gen:
                for cfg in (self.stream.video_config, self.stream.audio_config):
                    if cfg is not None:
                        q.append(cfg.unit)
        elif len(q) >= self.max_units:
            self.overflows += 1
            self.dropped += 1
            self._skipping = True
            self.stream.request_keyframe()
            if self.overflows == 1 or self.overflows % 100 == 0:
                log.warning(
                    "stream %s: reader %s too slow, skipping to the next keyframe (%d overflows)",
                    self.stream.public_id, self.name, self.overflows,
                )
            return
        if entry.unit.config:
            self._config_gen = self.stream.config_gen
        q.append(entry.unit)
        if self._gather_ms:
            self._wake_gathered(entry)
        else:
            self._wakeup.set()

    def _wake_gathered(self, entry: Entry) -> None:
        after_rap, self._after_rap = self._after_rap, entry.rap
        if self._wakeup.is_set():
            return
        start = self._gather_from
        if start is None:
            start = self._gather_from = entry.ts
        if (entry.rap or after_rap or entry.ts - start >= self._gather_ms
                or len(self._queue) * 2 >= self.max_units):
            self._gather_from = None
            self._wakeup.set()

    def end(self, reason: str) -> None:
        self.ended = True
        self.end_reason = reason
        self._wakeup.set()

    # ------------------------------------------------------------- reader side (its task)

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def get(self) -> AccessUnit | None:
        """The next unit, or None once the stream has ended and the queue is drained."""
        while True:
            if self._queue and (self._wakeup.is_set() or self.ended):
                self.delivered += 1
                unit = self._queue.popleft()
                if not self._queue:
                    self._wakeup.clear()  # drained: the next wakeup comes from offer()
                return unit
            if self.ended:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    async def batch(self, limit: int) -> list[AccessUnit] | None:
        """The next unit and whatever else is already queued, up to `limit` (one thread hop for a
        reader that converts or writes in its own thread); None once the stream has ended."""
        first = await self.get()
        if first is None:
            return None
        batch = [first]
        q = self._queue
        while q and len(batch) < limit:
            self.delivered += 1
            batch.append(q.popleft())
        if not q:
            self._wakeup.clear()
        return batch

    def __aiter__(self) -> AsyncIterator[AccessUnit]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[AccessUnit]:
        while True:
            unit = await self.get()
            if unit is None:
                return
            yield unit

    def close(self) -> None:
        """Unsubscribe (the reader is done, e.g. its consumer failed)."""
        self.ended = True
        self.end_reason = self.end_reason or "reader_closed"
        self._queue.clear()
        self.stream.remove_reader(self)
        self._wakeup.set()
