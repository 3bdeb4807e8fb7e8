"""Low-Latency HLS from the hub: one CMAF writer and LL playlist per live H.264/HEVC (+AAC/Opus) stream, in memory.

Per stream, never per viewer: a hub reader's task pushes units into `CmafWriter` (media/hls/cmaf.py)
on the event loop (pure Python, a few us a unit: no thread hop) and reports parts and segment ends to
`LowLatencyPlaylist` (media/hls/ll_playlist.py). Parts, segments (the concatenation of their parts,
joined once when the segment closes) and the init section are kept in memory: the playlist's
window plus the parts' retention (RFC 8216bis: parts stay fetchable ~3 target durations after they
leave the playlist; here whole segments, 3 target durations' worth past the oldest listed one).
Nothing goes to disk: nginx can proxy these URLs to the media port (they are small and short-lived).

URLs (next to the MPEG-TS ones, `/hls/{id}.m3u8` and `/hls/{id}/seg{N}.ts`; different names and
extensions, so no collision):
    /hls/{id}/ll.m3u8                 the LL media playlist: _HLS_msn, _HLS_part, _HLS_skip
    /hls/{id}/init{msn}.mp4           an init section, named by the first segment it is for: a new
                                      one after a codec change (a resumed publish's), with a discontinuity
    /hls/{id}/part{msn}.{n}.m4s       a part (the preload hint waits until it is written)
    /hls/{id}/seg{msn}.m4s            a complete segment

Blocking requests are neither tasks nor timers per viewer: the route answers synchronously (the
media HTTP server makes a task only for a handler that returns an awaitable), a waiting request
is an entry in a dict keyed by its target, answered by the writer after each change, and one timer
per stream answers 503 to the entries past `block_timeout`.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from media.http_server import HttpConnection, HttpRequest
from media.hub.stream import Stream
from media.hub.unit import AUDIO, TIME_BASE, VIDEO, AccessUnit

from .cmaf import CmafError, CmafWriter, opus_config
from .ll_playlist import (
    BadRequest,
    DirectiveError,
    InitResource,
    LowLatencyOptions,
    LowLatencyPlaylist,
    PartRef,
    PartResource,
    ReloadTarget,
    SegmentResource,
    Wait,
    init_uri,
    parse_skip,
    parse_uri,
)
from .players import HlsPlayers, ll_with_ctx, multivariant, query_ctx

log = logging.getLogger(__name__)

PLAYLIST_NAME = "ll.m3u8"
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
MEDIA_TYPE = "video/mp4"
PART_TYPE = "video/iso.segment"
# Each publish numbers its segments from the epoch second after it started (as the MPEG-TS
# segmenter does), so a name is never reused by a later publish of the room: a part, a segment or
# the init section under one name never changes, and a cache (a CDN, nginx) may keep it a while.
MEDIA_CACHE = "max-age=60"
_RETENTION = 3  # target durations a part stays fetchable after it left the playlist
_BATCH = 256
_FIT_STEPS = 8  # video dts steps averaged to fit PART-TARGET to the frame rate
Handler = Callable[[HttpConnection, HttpRequest], Awaitable[None] | None]

# Reader wakeups: gather_ms=0, i.e. the reader's task is woken once per hub write that queues units
# (StreamReader.offer sets its event; `batch()` then takes everything queued). A gather of 200 ms
# (media/hls/from_hub.py) would publish a part up to 200 ms late, a whole part target; the gather
# there saves thread hops, and this writer has none (a wakeup is one task step, tens of us). An
# RTMP publisher's reads are already merged (RTMP_MERGED_READ_MS, 40 ms) and a read's units are
# offered in one go, so this is ~25-75 wakeups a second per stream, not one per viewer. Part
# boundaries never depend on wakeups: they come from the units' timestamps.
_GATHER_MS = 0


@dataclass(frozen=True, slots=True)
class LlHlsConfig:
    options: LowLatencyOptions = LowLatencyOptions()
    reader_units: int = 2048
    keep_after_end: float = 60.0  # s an ended stream's playlist (ENDLIST) and media stay served


class _Waiter:
    """One held request: a playlist reload, or the preload-hint part."""

    __slots__ = ("conn", "keep_alive", "head_only", "skip", "deadline", "done", "ctx")

    def __init__(self, conn: HttpConnection, req: HttpRequest, skip: bool, deadline: float) -> None:
        self.conn = conn
        self.ctx = query_ctx(req.query)  # the player's id (media/hls/players.py), if it gave one
        self.keep_alive = req.keep_alive
        self.head_only = req.method == "HEAD"
        self.skip = skip
        self.deadline = deadline
        self.done = False


class LowLatencyStream:
    """One publish's LL-HLS: the writer side (units in) and what the route reads."""

    def __init__(self, stream: Stream, config: LlHlsConfig, *, after_msn: int = -1) -> None:
        self.stream = stream
        self.public_id = stream.public_id
        self.config = config
        # Replaced by one with the PART-TARGET fitted to the frame rate before the first part (`_fit`).
        # Past the highest msn an earlier publish can have reached: it started from an earlier clock
        # reading in the same unit and made at most one segment per unit since (a segment lasts at
        # least segment_target s of media, the unit is that, at most 1 s, and a live publisher
        # sends media at the wall clock's pace); and past `after_msn`, the last publish's here.
        unit = min(1.0, config.options.segment_target)
        self.first_msn = max(int(time.time() / unit) + 1, after_msn + 1)
        # Init sections by number: the msn of the first segment each is for (`init{N}.mp4`), so a
        # later publish or a codec change never reuses a name. None before the first part (a 404).
        self._init_epoch = self.first_msn
        self.inits: dict[int, bytes] = {}
        self.playlist = LowLatencyPlaylist(config.options, init_uri=init_uri(self._init_epoch),
                                           first_msn=self.first_msn)
        self._highest_msn = self.first_msn
        self.parts: dict[PartRef, bytes] = {}
        self.segments: dict[int, bytes] = {}
        self.failed: str | None = None
        self._late_audio = False
        self._writer: CmafWriter | None = None
        self._sequence = 0  # the last fragment's, of the writers before this one
        self._configs: dict[str, AccessUnit] = {}
        self._open_parts: list[bytes] = []
        self._segment_start = 0  # dts of the open segment's first video sample
        self._last_video: int | None = None
        self._steps: list[int] = []  # the first video dts steps, to fit PART-TARGET to the frame rate
        self._part_ticks: float | None = None  # PART-TARGET in ticks, once fitted
        self._segment_ticks = round(config.options.segment_target * TIME_BASE)
        self._reloads: dict[ReloadTarget, list[_Waiter]] = {}
        self._hints: dict[PartRef, list[_Waiter]] = {}
        self._deadlines: deque[_Waiter] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self.players: HlsPlayers | None = None  # counts each player's bytes (set by LowLatencyService)
        self.reader = stream.add_reader("llhls", max_units=config.reader_units, gather_ms=_GATHER_MS)

    # ------------------------------------------------------------- the writer (the stream's task)

    async def run(self) -> None:
        try:
            while (batch := await self.reader.batch(_BATCH)) is not None:
                changed = False
                for unit in batch:
                    changed |= self._unit(unit)
                    if self.failed:
                        break
                if self.failed:
                    self.reader.close()
                    break
                if changed:
                    self._wake()
        finally:
            self._finish()

    def _unit(self, unit: AccessUnit) -> bool:
        """Push one unit; True when the playlist changed."""
        if unit.kind not in (VIDEO, AUDIO):
            return False  # script data (onMetaData, cue points) has no place in CMAF here
        if unit.config:
            if self._writer is None:
                self._configs[unit.kind] = unit
            elif unit.kind not in self._configs:
                if unit.kind == AUDIO and not self._late_audio:
                    self._late_audio = True
                    log.warning("llhls %s: audio started after the first picture: not in LL-HLS for this publish",
                                self.public_id)
            elif unit.payload != self._configs[unit.kind].payload and unit.codec != "opus":
                # (An OpusHead after the init keeps it: packets carry their channel count, PreSkip is for the start.)
                self._new_init(unit)
                return True
            return False
        writer = self._writer
        if writer is None:
            if not (unit.kind == VIDEO and unit.keyframe):
                return False  # audio before the first picture, or a GOP's tail: not in any segment
            if not self._start(unit):
                return False
            writer = self._writer
            assert writer is not None
        if unit.kind == AUDIO and (AUDIO not in self._configs or unit.dts < self._segment_start):
            return False
        try:
            writer.push(unit)
        except CmafError as exc:  # an equal dts (the hub clamps, it does not reorder): drop the unit
            log.debug("llhls %s: unit dropped: %s", self.public_id, exc)
            return False
        if unit.kind != VIDEO:
            return False
        previous, self._last_video = self._last_video, unit.dts
        start = writer.pending_start()
        if start is None or start == unit.dts or previous is None:
            return False
        new_segment = unit.keyframe and unit.dts - self._segment_start >= self._segment_ticks
        step = unit.dts - previous
        wanted = self.config.options.part_target * TIME_BASE
        if self._part_ticks is None and step > 0:
            self._steps.append(step)
            # Fitted a frame before the first part could be due, so that part is not cut late.
            if len(self._steps) >= _FIT_STEPS or unit.dts - start + 2 * step > wanted:
                self._fit()
        limit = self._part_ticks if self._part_ticks is not None else wanted
        if not new_segment and unit.dts - start + step <= limit:
            return False
        if self._part_ticks is None:
            self._fit()
        # Cut before `unit`: it was pushed, so the flushed part ends exactly at its dts.
        part = writer.flush()
        if part is not None and not self._add_part(part.data, part.duration, part.independent):
            return False
        if new_segment:
            self._end_segment()
            self._segment_start = unit.dts
        return True

    def _fit(self) -> None:
        """PART-TARGET from the frame rate: parts of n frames must be at most PART-TARGET and (but an
        independent or a segment's last) at least 85% of it, so a fixed 0.2 s fails 24 and 29.97 fps
        (5 frames are 208 or 200.2 ms, 4 or 5 under 170 ms). The target is n frames plus a jitter
        margin (RTMP's millisecond clock), the largest n that fits LLHLS_PART; a slower video than
        one frame per LLHLS_PART gets one frame plus the margin."""
        options = self.config.options
        frame = sum(self._steps) / len(self._steps) if self._steps else options.part_target * TIME_BASE
        wanted = options.part_target * TIME_BASE
        frames = max(1, int(wanted // frame))
        while frames > 1 and frames * frame * (1 + _margin(frames)) > wanted:
            frames -= 1
        ticks = frames * frame * (1 + _margin(frames))
        self._part_ticks = ticks
        part_target = round(ticks / TIME_BASE, 5)
        self.playlist = LowLatencyPlaylist(LowLatencyOptions(part_target, max(part_target, options.segment_target),
                                                             options.window), init_uri=init_uri(self._init_epoch),
                                           first_msn=self.first_msn)
        if part_target != options.part_target:
            log.info("llhls %s: PART-TARGET %.5f s (%d frames of %.2f ms)", self.public_id, part_target, frames,
                     frame / TIME_BASE * 1000)

    def _start(self, keyframe: AccessUnit) -> bool:
        if VIDEO not in self._configs:
            self._fail(f"LL-HLS needs H.264 or HEVC video, got {keyframe.codec} without its configuration")
            return False
        if AUDIO not in self._configs and self.stream.audio_codec == "opus":
            self._configs[AUDIO] = opus_config(keyframe.dts)  # WebRTC's Opus: no OpusHead needed, nor one yet
        try:
            self._writer = CmafWriter(self._configs.values(), after_sequence=self._sequence)
        except CmafError as exc:
            self._fail(str(exc))
            return False
        self._segment_start = keyframe.dts
        return True

    def _add_part(self, data: bytes, duration: float, independent: bool) -> bool:
        try:
            ref = self.playlist.add_part(duration, independent)
        except ValueError as exc:  # a part over PART-TARGET (a gap in the video) or under its 85%
            self._fail(f"part refused: {exc}")
            return False
        self.parts[ref] = data
        self._highest_msn = ref.msn
        self._open_parts.append(data)
        if self._init_epoch not in self.inits:
            assert self._writer is not None
            self.inits[self._init_epoch] = self._writer.init
        return True

    def _new_init(self, config: AccessUnit) -> None:
        """New codec parameters (a resumed publish's, an encoder's change): the open segment ends
        with what it has, and the next keyframe starts a discontinuous one with a new init section
        under a new name (players cache init sections by URI)."""
        writer, self._writer = self._writer, None
        assert writer is not None
        part = writer.finish()
        self._sequence = writer.sequence
        if part is not None and part.ticks > 0:
            self._add_part(part.data, part.duration, part.independent)
        if self._open_parts:
            self._end_segment()
        self._configs[config.kind] = config
        self._last_video = None
        self._init_epoch = self._open_msn()
        self.playlist.discontinuity(init_uri(self._init_epoch))
        log.info("llhls %s: new %s configuration: a discontinuity and %s", self.public_id, config.kind,
                 init_uri(self._init_epoch))

    def _end_segment(self) -> None:
        msn = self.playlist.end_segment()
        self.segments[msn] = b"".join(self._open_parts)
        self._open_parts = []
        self._evict()

    def _evict(self) -> None:
        """Forget segments (and their parts) past the playlist plus the retention."""
        options = self.config.options
        keep = math.ceil(_RETENTION * self.playlist.target_duration / options.segment_target)
        oldest = self.playlist.first_msn - keep
        for msn in [m for m in self.segments if m < oldest]:
            del self.segments[msn]
        for ref in [r for r in self.parts if r.msn < oldest]:
            del self.parts[ref]

    def _fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
            log.warning("llhls %s: stopped: %s", self.public_id, reason)

    def _finish(self) -> None:
        """The stream ended (or this writer failed): last part, ENDLIST, every waiter answered."""
        if self._writer is not None and not self.failed and not self.playlist.ended:
            part = self._writer.finish()
            if part is not None and part.ticks > 0:
                self._add_part(part.data, part.duration, part.independent)
            if self._open_parts:
                self.segments[self._open_msn()] = b"".join(self._open_parts)
        self._open_parts = []
        self.playlist.end()
        self._wake()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def last_msn(self) -> int:
        """The highest msn this publish used or announced (a preload hint names the next segment's)."""
        return self._highest_msn + 1

    def _open_msn(self) -> int:
        hint = self.playlist.next_part
        assert hint is not None
        return hint.msn

    # ------------------------------------------------------------- waiters

    def _wake(self) -> None:
        playlist = self.playlist
        for target in [t for t in self._reloads if playlist.satisfies(t)]:
            for waiter in self._reloads.pop(target):
                if not waiter.done:
                    waiter.done = True
                    self.send_playlist(waiter.conn, waiter.keep_alive, waiter.head_only, waiter.skip, waiter.ctx)
        hint = playlist.next_part
        for ref in [r for r in self._hints if r != hint]:
            data = self.parts.get(ref)
            for waiter in self._hints.pop(ref):
                if not waiter.done:
                    waiter.done = True
                    if data is None:  # the segment closed without that part: it never will exist
                        _not_found(waiter.conn, waiter.keep_alive)
                    elif self.counted(waiter.conn, waiter.ctx, len(data)):
                        _send_media(waiter.conn, data, PART_TYPE, waiter.keep_alive, waiter.head_only)

    def hold(self, key: ReloadTarget | PartRef, conn: HttpConnection, req: HttpRequest, skip: bool = False) -> None:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(conn, req, skip, loop.time() + self.playlist.block_timeout)
        table = self._hints if isinstance(key, PartRef) else self._reloads
        table.setdefault(key, []).append(waiter)  # type: ignore[arg-type]
        self._deadlines.append(waiter)
        if self._timer is None:
            self._timer = loop.call_at(waiter.deadline, self._expire)

    def _expire(self) -> None:
        """The stream's one timer: 503 for the requests blocked past block_timeout."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadlines = self._deadlines
        while deadlines and (deadlines[0].done or deadlines[0].deadline <= now):
            waiter = deadlines.popleft()
            if not waiter.done:
                waiter.done = True
                waiter.conn.respond(503, "not there yet\n", headers=[("Cache-Control", "no-cache")],
                                    keep_alive=waiter.keep_alive)
        for table in (self._reloads, self._hints):
            for key in [k for k, waiters in table.items() if all(w.done for w in waiters)]:
                del table[key]
        if deadlines:
            self._timer = loop.call_at(deadlines[0].deadline, self._expire)

    def send_playlist(self, conn: HttpConnection, keep_alive: bool, head_only: bool, skip: bool,
                      ctx: str | None = None) -> None:
        body = self.playlist.render(skip).encode()
        if ctx is not None and self.players is not None:
            body = ll_with_ctx(body, ctx)
        conn.respond(200, body, content_type=PLAYLIST_TYPE, headers=[("Cache-Control", "no-cache")],
                     keep_alive=keep_alive, head_only=head_only)

    def counted(self, conn: HttpConnection, ctx: str | None, size: int) -> bool:
        """Count a media response as its player's bytes; False (answered 403) when staff dropped it."""
        if ctx is None or self.players is None or self.players.segment(ctx, size):
            return True
        conn.respond(403, "dropped by staff\n", keep_alive=False)
        return False

    def stop(self) -> None:
        self.reader.close()


class LowLatencyService:
    """One `LowLatencyStream` per live stream; its route serves them all."""

    def __init__(self, config: LlHlsConfig) -> None:
        self.config = config
        # Counts players as viewer sessions (media/hls/players.py, shared with the MPEG-TS route; set
        # by the runtime): `ll.m3u8` without `?ctx=` answers a multivariant playlist naming the LL
        # playlist under a player id, which the player then reloads (hls.js keeps the query and adds
        # its _HLS_ directives). Each player's copy of the playlist names its parts, segments and
        # init sections under the same `?ctx=`, so their bytes count as that player's.
        self.players: HlsPlayers | None = None
        self.streams: dict[str, LowLatencyStream] = {}
        self._tasks: set[asyncio.Task] = set()
        self._forget: dict[str, asyncio.TimerHandle] = {}

    def stream_started(self, stream: Stream) -> None:
        old = self.streams.get(stream.public_id)
        if old is not None:
            old.stop()
        handle = self._forget.pop(stream.public_id, None)
        if handle is not None:
            handle.cancel()
        ll = LowLatencyStream(stream, self.config, after_msn=-1 if old is None else old.last_msn)
        ll.players = self.players
        self.streams[stream.public_id] = ll
        task = asyncio.get_running_loop().create_task(self._run(ll), name=f"llhls-{stream.public_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, ll: LowLatencyStream) -> None:
        try:
            await ll.run()
        except Exception:
            log.exception("llhls %s: writer failed", ll.public_id)
        finally:
            if self.streams.get(ll.public_id) is ll:
                self._forget[ll.public_id] = asyncio.get_running_loop().call_later(
                    self.config.keep_after_end, self._drop, ll)

    def _drop(self, ll: LowLatencyStream) -> None:
        if self.streams.get(ll.public_id) is ll:
            del self.streams[ll.public_id]
            self._forget.pop(ll.public_id, None)

    async def stop(self) -> None:
        for handle in self._forget.values():
            handle.cancel()
        for ll in self.streams.values():
            ll.stop()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def active(self) -> int:
        return sum(1 for ll in self.streams.values() if not ll.playlist.ended)

    # ------------------------------------------------------------- HTTP

    def route(self, fallback: Handler | None) -> Handler:
        """The `/hls/` handler: LL names here, anything else to `fallback` (the MPEG-TS files)."""
        prefix = "/hls/"

        def handle(conn: HttpConnection, req: HttpRequest) -> Awaitable[None] | None:
            public_id, slash, name = req.path[len(prefix):].partition("/")
            if slash and (name == PLAYLIST_NAME or parse_uri(name) is not None) and _valid_id(public_id):
                return self.serve(conn, req, public_id, name)
            if fallback is not None:
                return fallback(conn, req)
            _not_found(conn, req.keep_alive)
            return None

        return handle

    def serve(self, conn: HttpConnection, req: HttpRequest, public_id: str, name: str) -> Awaitable[None] | None:
        if req.method not in ("GET", "HEAD"):
            conn.respond(405, "method not allowed\n", headers=[("Allow", "GET, HEAD, OPTIONS")], keep_alive=False)
            return
        ll = self.streams.get(public_id)
        if ll is None or not ll.inits:
            _not_found(conn, req.keep_alive)
            return
        head_only = req.method == "HEAD"
        if name == PLAYLIST_NAME:
            if self.players is None or ll.playlist.ended:
                self._playlist(conn, req, ll)
                return None
            ctx = query_ctx(req.query)
            if ctx is None:  # a new player: its own id first
                entry = multivariant(public_id, HlsPlayers.new_ctx(), PLAYLIST_NAME)
                conn.respond(200, entry, content_type=PLAYLIST_TYPE, headers=[("Cache-Control", "no-cache")],
                             keep_alive=req.keep_alive, head_only=head_only)
                return None
            known = self.players.known(public_id, ctx)
            if known is None:
                return self._counted_playlist(conn, req, ll, ctx)
            if not known:
                conn.respond(403, "dropped by staff\n", keep_alive=False)
                return None
            self._playlist(conn, req, ll)
            return None
        resource = parse_uri(name)
        data, content_type = None, PART_TYPE
        if isinstance(resource, InitResource):
            data, content_type = ll.inits.get(resource.epoch), MEDIA_TYPE
        elif isinstance(resource, PartResource):
            ref = PartRef(resource.msn, resource.part)
            data = ll.parts.get(ref)
            if data is None and ref == ll.playlist.next_part:
                ll.hold(ref, conn, req)
                return None
        elif isinstance(resource, SegmentResource):
            data = ll.segments.get(resource.msn)
        if data is None:
            _not_found(conn, req.keep_alive)
        elif ll.counted(conn, query_ctx(req.query), len(data)):
            _send_media(conn, data, content_type, req.keep_alive, head_only)
        return None

    async def _counted_playlist(self, conn: HttpConnection, req: HttpRequest, ll: LowLatencyStream, ctx: str) -> None:
        """A player's playlist request: its session opens with the first (the on_play hook asked)."""
        assert self.players is not None
        if await self.players.admit(conn, ll.public_id, ctx):
            self._playlist(conn, req, ll)

    @staticmethod
    def _playlist(conn: HttpConnection, req: HttpRequest, ll: LowLatencyStream) -> None:
        query = dict(parse_qsl(req.query, keep_blank_values=True))
        try:
            skip = parse_skip(query.get("_HLS_skip"))
        except DirectiveError as exc:
            conn.respond(400, f"{exc}\n", headers=[("Cache-Control", "no-cache")], keep_alive=req.keep_alive)
            return
        decision = ll.playlist.blocking_reload(query.get("_HLS_msn"), query.get("_HLS_part"))
        if isinstance(decision, BadRequest):
            conn.respond(400, f"{decision.reason}\n", headers=[("Cache-Control", "no-cache")],
                         keep_alive=req.keep_alive)
        elif isinstance(decision, Wait):
            ll.hold(decision.target, conn, req, skip)
        else:
            ll.send_playlist(conn, req.keep_alive, req.method == "HEAD", skip, query_ctx(req.query))


def _margin(frames: int) -> float:
    """A part target's room above n frames for jitter: half a frame, at most 15% (85% of the target
    must stay at most n frames)."""
    return min(0.5 / frames, 0.15)


def _valid_id(public_id: str) -> bool:
    return 0 < len(public_id) <= 128 and all(c.isascii() and (c.isalnum() or c in "_-") for c in public_id)


def _send_media(conn: HttpConnection, data: bytes, content_type: str, keep_alive: bool, head_only: bool) -> None:
    conn.respond(200, data, content_type=content_type, headers=[("Cache-Control", MEDIA_CACHE)],
                 keep_alive=keep_alive, head_only=head_only)


def _not_found(conn: HttpConnection, keep_alive: bool) -> None:
    conn.respond(404, "not found\n", headers=[("Cache-Control", "no-cache")], keep_alive=keep_alive)
