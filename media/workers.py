"""One bounded thread pool for the media plane's per-stream CPU work: HLS segmenting, recording and
the transcoding bridges run their blocking calls (FFmpeg through PyAV, file writes) here, never on
the event loop, and never in a thread of their own.

Each piece of work holds a *lane* for its life: one stream's HLS writer, one recording, one
bridge. A lane's calls run one at a time and in order (its owner awaits each one), on any of the
pool's threads. The pool has `MEDIA_WORKERS` threads (default: 4 per core, so a running video
transcode cannot starve the segmenters) and takes at most `MEDIA_WORKER_LANES` lanes (default: 50
per core, more work than the cores can do in real time). Past that a new lane is refused with
`WorkersFull`, whose message names the setting; the work is not started (no HLS or recording for
that stream, a viewer needing a bridge refused with 503) and everything already running goes on.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from media.config import _int

T = TypeVar("T")

THREADS_PER_CORE = 4
LANES_PER_CORE = 50


class NodeBusy(Exception):
    """This node already runs as much per-stream work of this kind as it is allowed to."""


class WorkersFull(NodeBusy):
    """Every lane of the worker pool is taken (MEDIA_WORKER_LANES)."""


class Lane:
    """One piece of per-stream work on the pool. Close it when the work ends (idempotent)."""

    __slots__ = ("pool", "name", "closed")

    def __init__(self, pool: WorkerPool, name: str) -> None:
        self.pool = pool
        self.name = name
        self.closed = False

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on a pool thread; the owner awaits it, so a lane's calls never overlap."""
        return await asyncio.get_running_loop().run_in_executor(self.pool.executor(), fn, *args)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.lanes -= 1


class WorkerPool:
    def __init__(self, threads: int, max_lanes: int) -> None:
        self.threads = max(1, threads)
        self.max_lanes = max(1, max_lanes)
        self.lanes = 0
        self.refused = 0
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerPool:
        env = os.environ if env is None else env
        cores = os.cpu_count() or 2
        return cls(_int(env, "MEDIA_WORKERS", THREADS_PER_CORE * cores), _int(env, "MEDIA_WORKER_LANES",
                                                                           LANES_PER_CORE * cores))

    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="media-worker")
        return self._executor

    def lane(self, name: str) -> Lane:
        """A lane for one piece of work (e.g. "hls room1"); raises WorkersFull past the cap."""
        if self.lanes >= self.max_lanes:
            self.refused += 1
            raise WorkersFull(f"this node runs {self.lanes} per-stream jobs already (MEDIA_WORKER_LANES="
                              f"{self.max_lanes}); {name} not started")
        self.lanes += 1
        return Lane(self, name)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


_pool: WorkerPool | None = None


def pool() -> WorkerPool:
    """The process's pool (sized from the environment at first use)."""
    global _pool
    if _pool is None:
        _pool = WorkerPool.from_env()
    return _pool
