"""One live stream: codec configuration, GOP cache, batched fan-out to viewers, per-stream readers.

A source calls ``write(unit)`` (synchronous, never awaits). Each unit becomes one ``Entry``
that every reader kind shares: per-kind framing is cached on the entry, so a tag, chunk or RTP
payload list is framed once per stream whatever the number of viewers.

Three kinds of reader, all fed from ``write``:

- sinks (``add_sink``): called synchronously with every entry as it arrives. WebRTC outputs
  are sinks: a frame is packetized once and sent to every subscriber before the next packet of
  the publisher is read (``sfu/from_hub.py``);
- viewers (RTMP players, HTTP-FLV responses) have no task and no queue: entries are collected
  into a batch and flushed every tick (``hub_tick_ms``) by each registered ``Fanout``, which
  writes one joined bytes object per viewer (see ``media/hub/fanout.py``);
- per-stream readers (HLS muxer, recorder, bridges) get a bounded queue and run their own task
  (``reader.py``).

The tick pays for itself only with many viewers: it saves writes per viewer, but costs an
event-loop wakeup of its own per batch and adds up to a tick of latency. So a stream with at
most ``hub_flush_now_viewers`` viewers flushes each entry at once (in the publisher's own
wakeup), and a stream without viewers collects no batch and runs no timer at all.

A reader that needs a keyframe calls ``request_keyframe()``: a source that can make one (a
WebRTC publisher: a PLI, rate-limited there) set ``keyframe_source``; one that cannot (RTMP)
leaves it None and readers start from the GOP cache instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, TypeVar

from .reader import StreamReader
from .unit import AUDIO, DATA, TICKS_PER_MS, VIDEO, AccessUnit

if TYPE_CHECKING:
    from ..config import MediaConfig
    from .fanout import Fanout

log = logging.getLogger(__name__)

F = TypeVar("F", bound="Fanout")
_KINDS = (VIDEO, AUDIO, DATA)
_RESUME_STEP = 40 * TICKS_PER_MS  # a resumed publish starts this long after the last unit before the drop


class StreamClosed(Exception):
    """The stream has ended; nothing more can be written to it or joined."""


class Sink(Protocol):
    """A synchronous reader of every entry (a WebRTC output)."""

    def on_entry(self, entry: Entry) -> None: ...

    def stream_ended(self, reason: str) -> None: ...

    @property
    def viewer_count(self) -> int: ...


class Entry:
    """One written unit plus what the hub derived from it once.

    ``unit`` carries the clamped dts (see ``Stream.write``); ``ts`` is that dts in milliseconds
    and ``delta`` the step in ms from the previous entry of the same kind (None for the first
    one, and always for data). The other slots are framing caches that the protocol edges fill
    once per entry and share between their viewers: ``flv`` (the FLV tag body, b"" when FLV
    cannot carry the codec), ``rtmp`` (format-1 chunks) and ``flv_tail`` (previous-tag size).
    ``arrived`` is when the source received it (monotonic s), for added-latency figures.
    """

    __slots__ = ("unit", "ts", "delta", "rap", "arrived", "reordered", "flv", "rtmp", "flv_tail")

    def __init__(self, unit: AccessUnit, ts: int, delta: int | None, rap: bool, arrived: float = 0.0,
                 reordered: bool = False) -> None:
        self.unit = unit
        self.ts = ts
        self.delta = delta
        self.rap = rap
        self.arrived = arrived
        self.reordered = reordered  # a video frame shown before one decoded earlier (a B-frame)
        self.flv: bytes | None = None
        self.rtmp: bytes | None = None
        self.flv_tail: bytes | None = None

    def __repr__(self) -> str:
        u = self.unit
        return f"Entry({u.kind}/{u.codec} ts={self.ts} delta={self.delta} rap={self.rap} len={len(u.payload)})"


class Stream:
    def __init__(
        self,
        public_id: str,
        config: MediaConfig,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.public_id = public_id
        self.config = config
        self.clock = clock
        self._loop = loop
        self.closed = False
        self.close_reason: str | None = None
        # Codec state kept for late joiners.
        self.metadata: Entry | None = None
        self.video_config: Entry | None = None
        self.audio_config: Entry | None = None
        self.config_gen = 0  # bumped whenever a sequence header changes
        # The codec of each track, from its first unit or declared by the source (`declare`).
        self.video_codec: str | None = None
        self.audio_codec: str | None = None
        self.tracks_known = asyncio.Event()  # set once any track is known (or the stream ended)
        # Who publishes (for the API and stats): "rtmp", "webrtc".
        self.source_protocol = ""
        # Set by a source that can make a keyframe on demand (WebRTC: a PLI, rate-limited).
        self.keyframe_source: Callable[[], None] | None = None
        # GOP cache: entries since the last random access point (first entry is that point);
        # None while invalid (nothing yet, or overflowed until the next random access point).
        self.gop: list[Entry] | None = None
        self.gop_bytes = 0
        self._last_dts: dict[str, int] = {}
        self._last_ts: dict[str, int] = {}
        self._sinks: list[Sink] = []
        # A derived stream (the source in other codecs, media/bridges) tells its source when its
        # viewers change, so the source's counts include them.
        self.parent: Stream | None = None
        # Video frames shown before a frame decoded earlier (B-frames): WebRTC cannot play them.
        self.reordered_frames = 0
        self._max_video_pts = -1
        self.keyframe_interval_ms: int | None = None  # between the last two video keyframes (the GOP)
        self._last_keyframe_ts: int | None = None
        # Fan-out.
        self._pending: list[Entry] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._fanouts: list[Fanout] = []
        self._fanout_by_type: dict[type, Fanout] = {}
        self._readers: list[StreamReader] = []
        self._batching = False  # any viewer (active, waiting or paused): entries go to _pending
        self._flush_now = False  # few viewers: flush every entry at once instead of per tick
        # Counters.
        self.started_at = time.time()  # wall clock, for the stats' uptime
        self.last_arrived = clock()  # when the newest unit came from the source (or the stream opened)
        self.source_addr = ""  # the publisher's address ("ip:port"), for the stats
        self.bytes_in = 0
        self.units_in = 0
        self.video_frames_in = 0
        self.slow_ended = (0, 0)  # slow_counts() of renditions that ended
        self.peak_viewers = 0
        self.flushes = 0
        self.gop_overflows = 0
        # Reconnect grace (StreamRegistry.hold/resume): the publisher is gone since `held_since`
        # (wall clock) and its viewers wait; a resumed publish's timestamps are moved by `_shift`
        # ticks so that every reader sees them continue forward.
        self.held_since: float | None = None
        self.resumes = 0
        self._shift = 0
        self._shift_pending = False

    # ------------------------------------------------------------------ source side

    def write(self, unit: AccessUnit, arrived: float | None = None) -> None:
        """Take one unit from the source. Synchronous; never waits on any reader.

        The one timestamp rule for every reader: per kind, dts never goes backwards (a step back
        is clamped to the previous value, pts kept at or after it) and never below 0.
        """
        if self.closed:
            raise StreamClosed(self.public_id)
        if self._shift_pending:
            self._shift_to_continue(unit)
        if self._shift:
            unit = replace(unit, dts=unit.dts + self._shift, pts=unit.pts + self._shift)
        self.units_in += 1
        self.bytes_in += len(unit.payload)
        kind = unit.kind
        if kind == VIDEO and not unit.config:
            self.video_frames_in += 1
        if kind not in _KINDS:
            raise ValueError(f"unknown unit kind {kind!r}")
        prev = self._last_dts.get(kind)
        dts = unit.dts
        if dts < 0 or (prev is not None and dts < prev):
            dts = 0 if prev is None else prev
            unit = replace(unit, dts=dts, pts=max(unit.pts, dts))
        self._last_dts[kind] = dts
        ts = dts // TICKS_PER_MS
        prev_ts = self._last_ts.get(kind)
        self._last_ts[kind] = ts
        delta = None if prev_ts is None or kind == DATA else ts - prev_ts
        if arrived is None:
            arrived = self.clock()
        self.last_arrived = arrived
        if kind == DATA:
            entry = Entry(unit, ts, None, False, arrived)
            if unit.config:
                self.metadata = entry
            self._append(entry)
            return
        self.declare(kind, unit.codec)
        if unit.config:
            entry = Entry(unit, ts, delta, False, arrived)
            if kind == VIDEO:
                self.video_config = entry
            else:
                self.audio_config = entry
            self.config_gen += 1
            self._gop_add(entry)
            self._append(entry)
            return
        reordered = kind == VIDEO and unit.pts < self._max_video_pts
        if reordered:
            self.reordered_frames += 1
        elif kind == VIDEO:
            self._max_video_pts = unit.pts
        rap = unit.keyframe if kind == VIDEO else (unit.keyframe and not self.has_video)
        entry = Entry(unit, ts, delta, rap, arrived, reordered)
        if rap:
            if kind == VIDEO:
                if self._last_keyframe_ts is not None:
                    self.keyframe_interval_ms = ts - self._last_keyframe_ts
                self._last_keyframe_ts = ts
            self.gop = [entry]
            self.gop_bytes = len(unit.payload)
            for sink in self._sinks:
                sink.on_entry(entry)
            for r in self._readers:
                r.offer(entry)
            ready = [f for f in self._fanouts if f.waiting and f.waiting_ready()]
            if ready:
                # A viewer waits for this keyframe: flush what came before it, let the waiting
                # viewers in at the batch boundary, and send the keyframe at once.
                self.flush()
                for f in ready:
                    f.activate_waiting(entry)
                self._pending.append(entry)
                self.flush()
                return
            if self._batching:
                self._pending.append(entry)
                self._schedule()
            return
        self._gop_add(entry)
        self._append(entry)

    def _shift_to_continue(self, first: AccessUnit) -> None:
        """The first unit of a resumed publish (which starts its clock again, at 0 for ffmpeg and
        OBS): one shift for every kind puts it a frame after the newest unit before the drop."""
        self._shift_pending = False
        newest = max(self._last_dts.values(), default=None)
        self._shift = 0 if newest is None else max(0, newest + _RESUME_STEP - first.dts)

    def _gop_add(self, entry: Entry) -> None:
        gop = self.gop
        if gop is None:
            return
        gop.append(entry)
        self.gop_bytes += len(entry.unit.payload)
        if self.gop_bytes > self.config.gop_cache_max_bytes or len(gop) > self.config.gop_cache_max_units:
            self.gop = None
            self.gop_bytes = 0
            self.gop_overflows += 1
            log.info("stream %s: GOP cache over its bound, dropped until the next keyframe", self.public_id)

    def _append(self, entry: Entry) -> None:
        for sink in self._sinks:
            sink.on_entry(entry)
        for r in self._readers:
            r.offer(entry)
        if self._batching:  # else nobody to send it to: a joiner starts from the GOP cache
            self._pending.append(entry)
            self._schedule()

    def _schedule(self) -> None:
        if self._flush_handle is not None:
            return
        if self._flush_now:
            self.flush()
            return
        tick = self.config.hub_tick_ms
        if tick <= 0:
            self.flush()
            return
        loop = self._loop
        if loop is None:
            try:
                loop = self._loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (synchronous tests): the caller flushes
        self._flush_handle = loop.call_later(tick / 1000.0, self._on_tick)

    def _on_tick(self) -> None:
        self._flush_handle = None
        self.flush()

    def flush(self) -> None:
        """Send the pending batch to every fan-out now."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        batch = self._pending
        if not batch:
            return
        self._pending = []
        self.flushes += 1
        now = self.clock()
        for f in self._fanouts:
            if f.viewers:
                f.send(batch, now)

    # ------------------------------------------------------------------ viewers

    def fanout(self, kind: type[F]) -> F:
        """The stream's fan-out of the given kind (RTMP, FLV), created on first use."""
        f = self._fanout_by_type.get(kind)
        if f is None:
            if self.closed:
                raise StreamClosed(self.public_id)
            f = kind(self)
            self._fanout_by_type[kind] = f
            self._fanouts.append(f)
        return f  # type: ignore[return-value]

    @property
    def fanout_viewers(self) -> int:
        """RTMP and HTTP-FLV viewers."""
        return sum(len(f.viewers) for f in self._fanouts)

    @property
    def viewer_count(self) -> int:
        """Every viewer: fan-outs' and sinks' (WebRTC subscribers)."""
        return self.fanout_viewers + sum(s.viewer_count for s in self._sinks)

    def viewers_changed(self) -> None:
        """A viewer joined or left (a fan-out's, or a sink's subscriber)."""
        n = self.fanout_viewers
        self.peak_viewers = max(self.peak_viewers, self.viewer_count)
        self._batching = n > 0
        self._flush_now = n <= self.config.hub_flush_now_viewers
        if not self._batching:
            self._pending = []  # nobody left to send it to
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
        if self.parent is not None:
            self.parent.viewers_changed()

    def start_entries(self) -> tuple[list[Entry], int] | None:
        """What a new viewer needs before the live batches: the GOP cache and its time base.

        None when there is no decodable start yet (the viewer waits for the next keyframe).
        Call after ``flush()`` so every entry returned has already gone to the live viewers.
        """
        gop = self.gop
        if not gop:
            return None
        base = min(e.ts for e in gop)
        return list(gop), base

    def configs(self) -> list[Entry]:
        """Metadata and sequence headers, in the order a player wants them."""
        return [e for e in (self.metadata, self.video_config, self.audio_config) if e is not None]

    # ------------------------------------------------------------------ sinks, keyframes

    def add_sink(self, sink: Sink) -> None:
        """A reader of every entry for the stream's life (it ends with `stream_ended`)."""
        if self.closed:
            raise StreamClosed(self.public_id)
        self._sinks.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        try:
            self._sinks.remove(sink)
        except ValueError:
            pass

    def request_keyframe(self) -> bool:
        """Ask the source for a keyframe; False when it cannot make one (start from the GOP cache)."""
        source = self.keyframe_source
        if source is None or self.closed:
            return False
        source()
        return True

    def declare(self, kind: str, codec: str) -> None:
        """The track of `kind` carries `codec` (a source that knows before its first unit says so)."""
        if kind == VIDEO:
            self.video_codec = codec
        elif kind == AUDIO:
            self.audio_codec = codec
        else:
            return
        self.tracks_known.set()

    @property
    def has_video(self) -> bool:
        return self.video_codec is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    def last_dts(self, kind: str) -> int | None:
        """The dts of the newest unit of this kind (None before any)."""
        return self._last_dts.get(kind)

    def tracks(self) -> dict[str, str]:
        """The codecs this stream carries, e.g. {"video": "h264", "audio": "aac"}."""
        found = {VIDEO: self.video_codec, AUDIO: self.audio_codec}
        return {kind: codec for kind, codec in found.items() if codec}

    # ------------------------------------------------------------------ per-stream readers

    def add_reader(self, name: str, *, max_units: int | None = None, gather_ms: int = 0) -> StreamReader:
        """A bounded queue for a per-stream reader (HLS muxer, recorder, bridge).

        The reader owns a task that drains it (``async for unit in reader``). It starts with the
        sequence headers and the GOP cache; when full, units are dropped (and counted) until the
        next keyframe. With ``gather_ms`` its task wakes once per that much media (or keyframe),
        not per unit. ``reader.close()`` unsubscribes it.
        """
        if self.closed:
            raise StreamClosed(self.public_id)
        reader = StreamReader(self, name, max_units or self.config.reader_queue_units, gather_ms)
        start = self.start_entries()
        prime = [e for e in (self.metadata, self.video_config, self.audio_config) if e is not None]
        if start is not None:
            gop = start[0]
            prime += [e for e in gop if e not in prime]
            reader.prime(prime, synced=True)
        else:
            reader.prime(prime, synced=False)
            self.request_keyframe()
        self._readers.append(reader)
        return reader

    def remove_reader(self, reader: StreamReader) -> None:
        try:
            self._readers.remove(reader)
        except ValueError:
            pass

    @property
    def readers(self) -> tuple[StreamReader, ...]:
        return tuple(self._readers)

    # ------------------------------------------------------------------ reconnect grace

    def silent_for(self) -> float:
        """Seconds since the source's newest unit (since the stream opened, before any)."""
        return self.clock() - self.last_arrived

    def hold(self) -> None:
        """The publisher is gone without an unpublish: keep every viewer and reader, wait."""
        self.flush()
        self.held_since = time.time()
        self.keyframe_source = None

    def resume(self, *, protocol: str, keyframe_source: Callable[[], None] | None = None,
               client_addr: str = "") -> None:
        """A new publisher continues a held stream. Joiners wait for its first keyframe (the GOP
        cache is the old publisher's); its sequence headers reach every viewer as they come."""
        if self.closed:
            raise StreamClosed(self.public_id)
        self.flush()
        self.gop = None
        self.gop_bytes = 0
        self.source_protocol = protocol
        self.keyframe_source = keyframe_source
        self.source_addr = client_addr
        self.held_since = None
        self._shift_pending = True
        self.resumes += 1

    # ------------------------------------------------------------------ end

    def close(self, reason: str) -> None:
        """End the stream: flush, end every viewer cleanly, end every reader. Idempotent."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        self.close_reason = reason
        for f in self._fanouts:
            f.close_all(reason)
        for r in self._readers:
            r.end(reason)
        self._readers.clear()
        sinks, self._sinks = self._sinks, []
        for sink in sinks:
            try:
                sink.stream_ended(reason)
            except Exception:
                log.exception("stream %s: ending a sink failed", self.public_id)
        self.keyframe_source = None
        self.tracks_known.set()  # nobody waits for the tracks of an ended stream
        self.gop = None
        self._pending = []
        if self.parent is not None:  # a rendition: its slow viewers count as its source's
            skips, drops = self.slow_counts()
            self.parent.slow_ended = (self.parent.slow_ended[0] + skips, self.parent.slow_ended[1] + drops)

    def slow_counts(self) -> tuple[int, int]:
        """(viewers paused for a full buffer, viewers closed for staying behind): this stream's
        fan-outs' and those of its renditions that ended."""
        return (sum(f.skipped for f in self._fanouts) + self.slow_ended[0],
                sum(f.dropped_slow for f in self._fanouts) + self.slow_ended[1])
