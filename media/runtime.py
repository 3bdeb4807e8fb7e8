"""Start and stop the media plane (RTMP listener + media HTTP server) in the running loop."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from rtmp.server import RtmpServer

from .config import MediaConfig
from .control import ControlPlane
from .hls.files import HlsFiles
from .hls.segmenter import HlsOptions
from .hls.writer import HlsConfig, HlsService
from .http_server import MediaHttpServer
from .hub.registry import StreamRegistry

log = logging.getLogger(__name__)

STATS_EVERY = 1.0  # viewer counts go to the control plane at most this often per stream


@dataclass(eq=False)
class MediaPlane:
    config: MediaConfig
    control: ControlPlane
    registry: StreamRegistry
    rtmp: RtmpServer
    http: MediaHttpServer
    hls: HlsService | None = None
    rtmp_port: int = 0
    http_port: int = 0
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _reported: dict[str, int] = field(default_factory=dict)
    stopped: bool = False

    @property
    def drop_publisher(self):
        """The MediaControl implementation (``await plane.drop_publisher(public_id, reason)``)."""
        return self.registry.drop_publisher

    def own(self, task: asyncio.Task) -> None:
        """A task that lives as long as the plane (cancelled by stop())."""
        self._tasks.append(task)

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_EVERY)
            await self.report_viewers()

    async def report_viewers(self) -> None:
        """Push changed viewer counts, one call per stream whose count changed."""
        live = {s.public_id: s.viewer_count for s in self.registry.streams()}
        for public_id in list(self._reported):
            if public_id not in live:
                del self._reported[public_id]
        for public_id, count in live.items():
            if self._reported.get(public_id, 0 if count == 0 else -1) == count:
                continue
            self._reported[public_id] = count
            try:
                await self.control.viewers_changed(public_id=public_id, count=count)
            except Exception:
                log.exception("media: viewers_changed failed for %s", public_id)

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        await self.rtmp.stop()
        self.registry.close_all("error")
        if self.hls is not None:
            await self.hls.stop()
        await self.http.stop()
        log.info("media plane stopped")


def _start_hls(config: MediaConfig, registry: StreamRegistry, http: MediaHttpServer) -> HlsService | None:
    if not config.hls_enabled:
        return None
    root = Path(config.hls_path).resolve()
    hls = HlsService(HlsConfig(root=root, options=HlsOptions(config.hls_fragment, config.hls_playlist_length),
                               cleanup_after=config.hls_cleanup_after))
    if removed := hls.remove_stale():
        log.info("hls: removed %d stale file(s) from %s", removed, root)
    registry.on_start.append(hls.stream_started)
    http.add_route("/hls/", HlsFiles(root).handle)
    return hls


async def start_media_plane(
    config: MediaConfig | None = None,
    control: ControlPlane | None = None,
    *,
    register_control: bool = True,
) -> MediaPlane:
    """Start the RTMP and media HTTP servers; bound ports are on the returned plane.

    ``config`` defaults to ``MediaConfig.from_env()``, ``control`` to ``live.media_api``.
    The registry is registered as the ``MediaControl`` (staff drops) when the control plane
    offers a register hook and ``register_control`` is true.
    """
    config = config or MediaConfig.from_env()
    control = control or ControlPlane.from_live()
    registry = StreamRegistry(config)
    rtmp = RtmpServer(config, registry, control)
    http = MediaHttpServer(config, registry, control)
    plane = MediaPlane(config, control, registry, rtmp, http, hls=_start_hls(config, registry, http))
    try:
        plane.rtmp_port = await rtmp.start(config.bind, config.rtmp_port)
        plane.http_port = await http.start(config.bind, config.http_port)
    except BaseException:
        await plane.stop()
        raise
    plane._tasks.append(asyncio.get_running_loop().create_task(plane._stats_loop(), name="media-stats"))
    if register_control and control.media_control_register is not None:
        task = control.media_control_register(registry)
        if isinstance(task, asyncio.Task):
            plane._tasks.append(task)
    log.info("media plane: rtmp on %s:%d, http on %s:%d", config.bind, plane.rtmp_port, config.bind, plane.http_port)
    return plane
