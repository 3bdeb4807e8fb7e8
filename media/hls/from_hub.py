"""The async side of HLS: one writer per live stream, a hub reader feeding the segmenter on a lane
of the node's worker pool (media/workers.py), and the directory cleaned some time after the
publisher left.

Per stream, never per viewer: viewers only read the files the segmenter leaves on disk.

A stream HLS plays as it is (H.264 + AAC) is segmented from the start. One that needs a transcode
first (a browser's VP8 or Opus: media/bridges/rendition.py) is segmented on demand, as MediaMTX
does: the first playlist request starts the writer on the stream's H.264/AAC rendition and waits
for the first segment; the writer stops after `demand_idle` seconds without a playlist request, so
nothing is transcoded for nobody.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from media.bridges.rendition import H264_AAC, needs_rendition, playable
from media.hub.stream import Stream
from media.hub.unit import AccessUnit
from media.workers import WorkersFull, pool

from .segmenter import HlsOptions, HlsSegmenter, HlsUnsupported

log = logging.getLogger(__name__)

# The writer wakes (and hops to a worker thread) once per this much media, or at a keyframe,
# where a segment may end: a few hops a second instead of one per unit (the hop, a future and a
# wakeup of the loop, costs more than muxing the unit).
_GATHER_MS = 200
_BATCH = 256  # units handed over in one hop at most


@dataclass(frozen=True, slots=True)
class HlsConfig:
    root: Path
    options: HlsOptions
    cleanup_after: float = 60.0  # s after the publisher left; a reconnect before then resumes
    reader_units: int = 2048
    demand_idle: float = 30.0  # s without a playlist request before an on-demand writer stops
    demand_wait: float = 10.0  # s a first playlist request waits for an on-demand writer's first segment


def remove_files(root: Path, public_id: str) -> None:
    """Delete a stream's playlist and segments (blocking: run it off the event loop)."""
    (root / f"{public_id}.m3u8").unlink(missing_ok=True)
    shutil.rmtree(root / public_id, ignore_errors=True)


def leftovers(root: Path, live: set[str], older_than: float, now: float) -> list[str]:
    """Public ids of streams whose HLS files are still in `root` though they are not live and
    nothing of theirs was written for `older_than` s: what a node that died left behind."""
    if not root.is_dir():
        return []
    found: dict[str, float] = {}
    for path in root.iterdir():
        public_id = path.stem if path.suffix == ".m3u8" else path.name if path.is_dir() else None
        if public_id is None or public_id in live:
            continue
        newest = max([path.stat().st_mtime, *(p.stat().st_mtime for p in path.iterdir())] if path.is_dir()
                     else [path.stat().st_mtime])
        found[public_id] = max(found.get(public_id, 0.0), newest)
    return sorted(public_id for public_id, written in found.items() if now - written > older_than)


class HlsWriter:
    def __init__(self, stream: Stream, config: HlsConfig, *, resume: bool) -> None:
        self.stream = stream
        self.config = config
        self.resume = resume
        self.segmenter = HlsSegmenter(config.root, stream.public_id, config.options, resume=resume)
        self.lane = pool().lane(f"hls {stream.public_id}")  # raises WorkersFull
        try:
            self.reader = stream.add_reader("hls", max_units=config.reader_units, gather_ms=_GATHER_MS)
        except BaseException:
            self.lane.close()
            raise
        self.ready = asyncio.Event()  # set once the playlist exists

    async def run(self) -> None:
        lane = self.lane
        try:
            if not self.resume:  # on the stream's lane, before its first segment
                await lane.run(remove_files, self.config.root, self.stream.public_id)
            while (batch := await self.reader.batch(_BATCH)) is not None:
                if await lane.run(self._write_batch, batch):
                    self.ready.set()
        except HlsUnsupported as exc:
            log.warning("hls %s: not segmented: %s", self.stream.public_id, exc)
            self.reader.close()
        finally:
            try:
                await lane.run(self.segmenter.close)
            finally:
                lane.close()

    def _write_batch(self, batch: list[AccessUnit]) -> bool:
        """On a worker thread; True once the playlist exists."""
        for unit in batch:
            self.segmenter.write(unit)
        return self.ready.is_set() or self.segmenter.playlist.exists()

    def stop(self) -> None:
        self.reader.close()


class HlsService:
    """Starts a writer when a stream goes live and cleans its files after it ends."""

    def __init__(self, config: HlsConfig) -> None:
        self.config = config
        config.root.mkdir(parents=True, exist_ok=True)
        self._writers: dict[str, asyncio.Task] = {}
        self._writer_of: dict[str, HlsWriter] = {}
        self._on_demand: dict[str, Stream] = {}  # live streams whose HLS needs a transcode first
        self._demanded: dict[str, float] = {}  # their last playlist request (monotonic s)
        self._segments_ended = 0
        self.players = None  # media/hls/players.HlsPlayers, set by the runtime when it counts players
        self._ended_at: dict[str, float] = {}
        self._cleanups: dict[str, asyncio.TimerHandle] = {}

    def stream_started(self, stream: Stream) -> None:
        public_id = stream.public_id
        pending = self._cleanups.pop(public_id, None)
        if pending is not None:
            pending.cancel()
        for ended in [k for k, s in self._on_demand.items() if s.closed]:
            del self._on_demand[ended]
        asyncio.get_running_loop().create_task(self._follow(stream), name=f"hls-follow-{public_id}")

    def stream_resumed(self, stream: Stream) -> None:
        """A held stream's publisher is back (media/hub/registry.py): the segmenter restarts on the
        new publish's sequence headers and appends to the playlist after an EXT-X-DISCONTINUITY
        (its codec parameters may differ), as a reconnect after the stream ended does."""
        writer = self._writer_of.get(stream.public_id)
        if writer is None or writer.stream is not stream:
            return  # on demand (a rendition's writer follows its own stream), or not segmented
        writer.stop()  # now, before the new publish's first unit reaches its reader
        task = self._writers.get(stream.public_id)
        asyncio.get_running_loop().create_task(self._restart(writer, task), name=f"hls-resume-{stream.public_id}")

    async def _restart(self, writer: HlsWriter, task: asyncio.Task | None) -> None:
        public_id = writer.stream.public_id
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        if writer.stream.closed or public_id in self._writers:
            return
        try:
            self._start_writer(writer.stream)
        except WorkersFull as exc:
            log.warning("hls %s: not segmented after the reconnect: %s", public_id, exc)

    async def _follow(self, stream: Stream) -> None:
        """Segment the stream from the start, or on demand when it needs a transcode for HLS."""
        await stream.tracks_known.wait()
        if stream.closed:
            return
        if needs_rendition(stream, H264_AAC):
            self._on_demand[stream.public_id] = stream
            log.info("hls %s: carries %s; segmented on the first playlist request (it needs a transcode)",
                     stream.public_id, stream.tracks())
            return
        try:
            self._start_writer(stream)
        except WorkersFull as exc:
            log.warning("hls %s: not segmented: %s", stream.public_id, exc)

    def _start_writer(self, stream: Stream) -> HlsWriter:
        public_id = stream.public_id
        resume = public_id in self._ended_at and time.monotonic() - self._ended_at[public_id] < \
            self.config.cleanup_after
        writer = HlsWriter(stream, self.config, resume=resume)
        pending = self._cleanups.pop(public_id, None)
        if pending is not None:
            pending.cancel()
        task = asyncio.get_running_loop().create_task(self._run(writer), name=f"hls-{public_id}")
        self._writers[public_id] = task
        self._writer_of[public_id] = writer
        return writer

    async def demand(self, public_id: str) -> None:
        """A playlist request: start an on-demand writer and wait (a little) for its first segment.

        Raises TranscodeRefused when this node runs TRANSCODE_MAX video transcodes already, and
        WorkersFull when its worker pool has no lane left (both media.workers.NodeBusy).
        """
        source = self._on_demand.get(public_id)
        if source is None:
            return
        if source.closed:
            del self._on_demand[public_id]
            return
        self._demanded[public_id] = time.monotonic()
        writer = self._writer_of.get(public_id)
        if writer is None or writer.reader.ended:
            writer = self._start_writer(playable(source, H264_AAC))
            asyncio.get_running_loop().call_later(self.config.demand_idle, self._check_demand, public_id, writer)
        try:
            await asyncio.wait_for(writer.ready.wait(), self.config.demand_wait)
        except TimeoutError:
            pass  # the request answers 404; the player retries

    def _check_demand(self, public_id: str, writer: HlsWriter) -> None:
        if self._writer_of.get(public_id) is not writer or writer.reader.ended:
            return
        idle = time.monotonic() - self._demanded.get(public_id, 0.0)
        if idle >= self.config.demand_idle:
            log.info("hls %s: no playlist request for %.0f s; segmenting stopped", public_id, idle)
            writer.stop()
            return
        asyncio.get_running_loop().call_later(self.config.demand_idle - idle, self._check_demand, public_id, writer)

    async def _run(self, writer: HlsWriter) -> None:
        public_id = writer.stream.public_id
        try:
            await writer.run()
        except Exception:
            log.exception("hls %s: segmenting failed", public_id)
        finally:
            self._segments_ended += writer.segmenter.segments
            if self._writers.get(public_id) is asyncio.current_task():
                del self._writers[public_id]
                self._writer_of.pop(public_id, None)
                if writer.stream.closed:
                    self._on_demand.pop(public_id, None)
                    self._demanded.pop(public_id, None)
                self._ended_at[public_id] = time.monotonic()
                self._cleanups[public_id] = asyncio.get_running_loop().call_later(
                    self.config.cleanup_after, self._cleanup, public_id)

    def _cleanup(self, public_id: str) -> None:
        self._cleanups.pop(public_id, None)
        self._ended_at.pop(public_id, None)
        if public_id not in self._writers:
            asyncio.get_running_loop().run_in_executor(None, remove_files, self.config.root, public_id)

    def remove_stale(self) -> int:
        """At start: files left by an earlier process belong to no live stream."""
        stale = [p for p in self.config.root.iterdir() if p.suffix == ".m3u8" or p.is_dir()]
        for path in stale:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        return len(stale)

    async def stop(self) -> None:
        for handle in self._cleanups.values():
            handle.cancel()
        tasks = list(self._writers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def active(self) -> int:
        return len(self._writers)

    @property
    def segments_written(self) -> int:
        """Segments finished since start, every stream's."""
        return self._segments_ended + sum(w.segmenter.segments for w in self._writer_of.values())
