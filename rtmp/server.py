"""The RTMP listener: hosts ``RtmpConnection``s, owns their background tasks, counts them.

``connections``, ``publishers``, ``players`` and ``tasks`` make "nothing left behind"
checkable: after every client is gone they are all empty / zero.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from media.config import MediaConfig
from media.control import ControlPlane
from media.hub.registry import StreamRegistry

from .conn import RtmpConnection

log = logging.getLogger(__name__)


class RtmpServer:
    def __init__(
        self,
        config: MediaConfig,
        registry: StreamRegistry,
        control: ControlPlane,
        *,
        idle_timeout: float = 30.0,
    ) -> None:
        self.config = config
        self.registry = registry
        self.control = control
        self.idle_timeout = idle_timeout  # a publisher sending nothing this long is closed
        self.connections: set[RtmpConnection] = set()
        self.tasks: set[asyncio.Task] = set()
        self.ends_reported = 0
        self._server: asyncio.base_events.Server | None = None
        self.port: int | None = None

    @property
    def publishers(self) -> int:
        return sum(1 for c in self.connections if c.stream is not None)

    @property
    def players(self) -> int:
        return sum(1 for c in self.connections if c.player is not None)

    def tick_merged_reads(self, now: float) -> None:
        """Once a second (the media plane's stats tick): each publisher's merged-read mark."""
        for conn in self.connections:
            conn.tick_merged_read(now)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def report_end(self, session_id: int, reason: str, bytes_received: int, peak_viewers: int) -> None:
        """Tell the control plane a session ended (in the background, once per session)."""
        self.ends_reported += 1
        self.spawn(self._publish_ended(session_id, reason, bytes_received, peak_viewers), name=f"rtmp-end-{session_id}")

    async def _publish_ended(self, session_id: int, reason: str, bytes_received: int, peak_viewers: int) -> None:
        try:
            await self.control.publish_ended(
                session_id=session_id, reason=reason, bytes_received=bytes_received, peak_viewers=peak_viewers,
            )
        except Exception:
            log.exception("rtmp: reporting the end of session %s failed", session_id)

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: RtmpConnection(self), host, port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("rtmp: listening on %s:%d", host, self.port)
        return self.port

    async def stop(self, *, reason: str = "error", timeout: float = 5.0) -> None:
        """Stop listening, end every publish (reported) and close every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.connections):
            if conn.publishing:
                conn.drop(reason)
            else:
                conn.abort("server stopping")
        for public_id in list(self.registry.held_sessions()):  # nobody will reconnect to a stopped server
            self.registry.end(public_id, reason)
        deadline = asyncio.get_running_loop().time() + timeout
        while (self.connections or self.tasks) and asyncio.get_running_loop().time() < deadline:
            if self.tasks:
                await asyncio.wait(list(self.tasks), timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
            else:
                await asyncio.sleep(0.01)
        for task in list(self.tasks):
            task.cancel()
