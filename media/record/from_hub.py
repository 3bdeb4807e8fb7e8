"""The async side of recording: a hub reader feeding an `Mp4Recorder` in the recording's own
worker thread, and a service that records the live streams the control plane asks for.

Per stream, like HLS: the reader's bounded queue is drained into a single-thread executor in
batches (one thread hop per batch), so muxing and file I/O never run on the event loop and one slow
disk never stalls another stream. The file is a crash-safe fragmented MP4 (see `writer.py`); a
Celery task later turns it into a faststart MP4.

The control plane decides: `wants(public_id)` answers a `RecordingPlan` (or None) when a stream
goes live, staff start and stop recordings of live streams, and `done(plan, info, end_reason)` hears
how each one ended. Files are named after the recording id, never after the stream key. A
recording that ends because the stream's picture size changed is followed by a new part (a new
plan from `wants`) while the stream is live.

A stream whose video MP4 does not take as it is (a browser's VP8) is recorded from its H.264/AAC
rendition (media/bridges), as HLS is: that costs a transcode while it records.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from media.bridges.rendition import H264_AAC, TranscodeRefused, playable
from media.hub.stream import Stream, StreamClosed
from media.hub.unit import AccessUnit
from media.workers import WorkersFull, pool

from .writer import VIDEO_CODECS, Mp4Recorder, RecordingInfo, RecordUnsupported

log = logging.getLogger(__name__)

# Units handed to the worker thread in one hop: enough to amortize the hop, small enough to keep
# what a crash can lose (the queue, the muxer's open fragment) short.
_BATCH = 512
# The recorder wakes (and hops to a worker thread) once per this much media, or at a keyframe:
# the units arrive one by one, and a thread hop (a future, a wakeup of the loop) per unit cost
# 50 times the muxing itself.
_GATHER_MS = 250
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")

# End reasons besides the stream's own close reason (e.g. "publisher_left").
STOPPED = "stopped"  # staff stopped it
SHUTDOWN = "shutdown"  # the media plane stopped
CONFIG_CHANGED = "config_changed"  # the picture size or codec changed: a new part follows
UNSUPPORTED = "unsupported"
TRANSCODE_REFUSED = "transcode_refused"
NODE_BUSY = "node_busy"  # no worker lane left (MEDIA_WORKER_LANES)
ERROR = "error"


@dataclass(frozen=True, slots=True)
class RecordingPlan:
    recording_id: str  # the control plane's id; the file is `{recording_id}.part.mp4` under the root

    def __post_init__(self) -> None:
        if not _SAFE_ID.fullmatch(self.recording_id):
            raise ValueError(f"unsafe recording id {self.recording_id!r}")

    @property
    def file_name(self) -> str:
        """The fragmented MP4 written while live (finalizing makes `{recording_id}.mp4` of it)."""
        return f"{self.recording_id}.part.mp4"


class Recorder:
    """One recording of one stream, until the stream ends or `stop()`."""

    def __init__(self, stream: Stream, path: Path, *, reader_units: int = 2048, flush_every: float = 2.0) -> None:
        self.stream = stream
        self.path = path
        self.writer = Mp4Recorder(path, flush_every=flush_every)
        self.lane = pool().lane(f"recording {stream.public_id}")  # raises WorkersFull
        try:
            self.reader = stream.add_reader("record", max_units=reader_units, gather_ms=_GATHER_MS)
        except BaseException:  # StreamClosed
            self.lane.close()
            raise
        self.end_reason: str | None = None
        self._stop_reason: str | None = None

    async def run(self) -> RecordingInfo | None:
        """Record until the stream ends or `stop()`; the file is closed (on the lane) on every way
        out. `end_reason` says why it ended."""
        reason = None
        info = None
        try:
            reason = await self._write_all()
        finally:
            self.reader.close()
            try:
                info = await asyncio.shield(self.lane.run(self.writer.close))
            except Exception:
                log.exception("record %s: closing %s failed", self.stream.public_id, self.path.name)
                reason = reason or ERROR
            finally:
                self.lane.close()
        self.end_reason = reason or self._stop_reason or self.reader.end_reason or "ended"
        return info

    async def _write_all(self) -> str | None:
        """Hand the reader's units to the lane until it ends; a reason when the file did."""
        try:
            while (batch := await self.reader.batch(_BATCH)) is not None:
                if not await self.lane.run(self._write_batch, batch):
                    return self.writer.ended
        except RecordUnsupported as exc:
            log.warning("record %s: not recorded: %s", self.stream.public_id, exc)
            return UNSUPPORTED
        except Exception:
            log.exception("record %s: recording failed", self.stream.public_id)
            return ERROR
        return None

    def _write_batch(self, batch: list[AccessUnit]) -> bool:
        """On a worker thread; False once the file has ended on its own."""
        for unit in batch:
            self.writer.write(unit)
            if self.writer.ended:
                return False
        return True

    def stop(self, reason: str = STOPPED) -> None:
        """End the recording cleanly: what is queued is written, then the file is closed."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self.reader.end(reason)


Wants = Callable[[str], Awaitable[RecordingPlan | None]]
Done = Callable[[RecordingPlan, RecordingInfo | None, str], Awaitable[None]]


class RecorderService:
    """Records the live streams the control plane asks for, one recording at a time per stream."""

    def __init__(self, root: Path, wants: Wants, done: Done, *, reader_units: int = 2048,
                 flush_every: float = 2.0) -> None:
        self.root = root
        self.wants = wants
        self.done = done
        self.reader_units = reader_units
        self.flush_every = flush_every
        root.mkdir(parents=True, exist_ok=True)
        self._live: dict[str, Stream] = {}
        self._tasks: dict[str, asyncio.Task] = {}  # public id -> its recording (or its `wants` question)
        self._recorders: dict[str, Recorder] = {}
        self._asking: dict[str, asyncio.Task] = {}  # waiting for `wants`: nothing to report yet
        self._stopping = asyncio.Event()

    # ---------------------------------------------------------------- control

    def stream_started(self, stream: Stream) -> None:
        """A registry `on_start` listener: ask the control plane whether to record the stream."""
        self._live = {k: s for k, s in self._live.items() if not s.closed}
        self._live[stream.public_id] = stream
        if not self._stopping.is_set():
            self._spawn(stream, None)

    def can_start(self, public_id: str) -> bool:
        """The stream is live here and neither recording nor being asked about."""
        stream = self._live.get(public_id)
        return not (stream is None or stream.closed or public_id in self._tasks or self._stopping.is_set())

    def start(self, public_id: str, plan: RecordingPlan) -> bool:
        """Staff: record a live stream now; False when it is not live or already recording."""
        if not self.can_start(public_id):
            return False
        self._spawn(self._live[public_id], plan)
        return True

    def stop(self, public_id: str) -> bool:
        """Staff: end a stream's recording cleanly (`done` follows); False when none is running
        (including one still waiting for the stream's first units)."""
        recorder = self._recorders.get(public_id)
        if recorder is None:
            return False
        recorder.stop(STOPPED)
        return True

    def recording(self, public_id: str) -> bool:
        return public_id in self._recorders

    @property
    def active(self) -> int:
        return len(self._recorders)

    async def stop_all(self) -> None:
        """Shutdown: end every recording cleanly and wait for their `done` calls."""
        self._stopping.set()  # also wakes the recordings still waiting for their stream's tracks
        for recorder in list(self._recorders.values()):
            recorder.stop(SHUTDOWN)
        for task in self._asking.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    # ---------------------------------------------------------------- recordings

    def _spawn(self, stream: Stream, plan: RecordingPlan | None) -> None:
        public_id = stream.public_id
        previous = self._tasks.get(public_id)  # a reconnect while the last recording still closes
        # A fresh context: a stream started inside a request handler (WHIP) must not hand the
        # recording the request's context, whose thread executor ends with the request.
        task = asyncio.get_running_loop().create_task(self._follow(stream, plan, previous), name=f"rec-{public_id}",
                                                      context=contextvars.Context())
        self._tasks[public_id] = task

        def forget(done: asyncio.Task) -> None:
            if self._tasks.get(public_id) is done:
                del self._tasks[public_id]

        task.add_done_callback(forget)

    async def _follow(self, stream: Stream, plan: RecordingPlan | None, previous: asyncio.Task | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        public_id = stream.public_id
        while True:
            if plan is None:
                if stream.closed or self._stopping.is_set():
                    return
                self._asking[public_id] = asyncio.current_task()
                try:
                    plan = await self.wants(public_id)
                except Exception:
                    log.exception("record %s: asking whether to record failed", public_id)
                    return
                finally:
                    del self._asking[public_id]
                if plan is None:
                    return
            info, reason = await self._record(stream, plan)
            await self._report(plan, info, reason)
            if reason != CONFIG_CHANGED:
                return
            plan = None  # a new part, if the control plane still wants it

    async def _record(self, stream: Stream, plan: RecordingPlan) -> tuple[RecordingInfo | None, str]:
        public_id = stream.public_id
        try:
            if not await self._tracks_known(stream):
                return None, SHUTDOWN
            if not stream.has_video and not stream.closed:
                log.warning("record %s: not recorded: the stream has no video", public_id)
                return None, UNSUPPORTED
            source = stream if stream.video_codec in VIDEO_CODECS else playable(stream, H264_AAC)
            recorder = Recorder(source, self.root / plan.file_name, reader_units=self.reader_units,
                                flush_every=self.flush_every)
        except StreamClosed:
            return None, stream.close_reason or "ended"
        except (TranscodeRefused, WorkersFull) as exc:
            log.warning("record %s: not recorded: %s", public_id, exc)
            return None, TRANSCODE_REFUSED if isinstance(exc, TranscodeRefused) else NODE_BUSY
        except Exception:
            log.exception("record %s: the recording could not start", public_id)
            return None, ERROR
        self._recorders[public_id] = recorder
        log.info("record %s: recording %s to %s", public_id, plan.recording_id, recorder.path)
        try:
            info = await recorder.run()
        finally:
            del self._recorders[public_id]
        reason = recorder.end_reason or "ended"
        log.info("record %s: recording %s ended (%s): %s", public_id, plan.recording_id, reason,
                 f"{info.duration:.1f} s, {info.size} bytes" if info else "nothing recorded")
        return info, reason

    async def _tracks_known(self, stream: Stream) -> bool:
        """Wait until the stream's codecs are known; False when the service stops first."""
        waits = [asyncio.ensure_future(stream.tracks_known.wait()), asyncio.ensure_future(self._stopping.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return not self._stopping.is_set()

    async def _report(self, plan: RecordingPlan, info: RecordingInfo | None, reason: str) -> None:
        try:
            await self.done(plan, info, reason)
        except Exception:
            log.exception("record: reporting recording %s failed", plan.recording_id)
