"""Start and stop the media plane (RTMP listener + media HTTP server) in the running loop."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from rtmp.server import RtmpServer
from sfu.from_hub import webrtc_codec

from .codecs.flv_units import carries as flv_carries
from .config import MediaConfig
from .control import ControlPlane
from .hls.files import HlsFiles
from .hls.from_hub import HlsConfig, HlsService
from .hls.segmenter import CODECS as HLS_CODECS
from .hls.segmenter import HlsOptions
from .http_server import MediaHttpServer
from .hub.registry import StreamRegistry
from .hub.stream import Stream

log = logging.getLogger(__name__)

STATS_EVERY = 1.0  # viewer counts go to the control plane at most this often per stream
DESCRIBE_EVERY = 10.0  # a stream's description is sent again this often (its cache entry lives 30 s)

# Which codec each way of watching plays as it is (passthrough; the rest needs a transcoding bridge).
PLAYS = {
    "WebRTC": lambda kind, codec: webrtc_codec(kind, codec, None) is not None,
    "RTMP/HTTP-FLV": lambda kind, codec: flv_carries(codec),
    "HLS": lambda kind, codec: codec in HLS_CODECS,
}


def stream_media(stream: Stream) -> dict:
    """What a stream carries and what does not play where, for the room's API detail and page."""
    tracks = stream.tracks()
    notes = []
    for kind, codec in tracks.items():
        missing = [name for name, plays in PLAYS.items() if not plays(kind, codec)]
        if missing:
            notes.append(f"{kind} {codec} does not play over {' or '.join(missing)} yet (it needs transcoding)")
    return {"publisher": stream.source_protocol, "tracks": tracks, "notes": notes}


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
    _described: dict[str, tuple[dict, float]] = field(default_factory=dict)
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
            await self.report_media()

    async def report_media(self) -> None:
        """Send each live stream's description when it changed, and every DESCRIBE_EVERY s."""
        described = self.control.stream_described
        if described is None:
            return
        now = asyncio.get_running_loop().time()
        live = {s.public_id: s for s in self.registry.streams()}
        for public_id in list(self._described):
            if public_id not in live:
                del self._described[public_id]
        for public_id, stream in live.items():
            media = stream_media(stream)
            last = self._described.get(public_id)
            if last is not None and last[0] == media and now - last[1] < DESCRIBE_EVERY:
                continue
            self._described[public_id] = (media, now)
            try:
                await described(public_id=public_id, media=media)
            except Exception:
                log.exception("media: stream_described failed for %s", public_id)

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
    registry: StreamRegistry | None = None,
) -> MediaPlane:
    """Start the RTMP and media HTTP servers; bound ports are on the returned plane.

    ``config`` defaults to ``MediaConfig.from_env()``, ``control`` to ``live.media_api``.
    The registry is registered as the ``MediaControl`` (staff drops) when the control plane
    offers a register hook and ``register_control`` is true. Pass ``registry`` to share one with
    other sources in the process (the WebRTC SFU): one stream per room, whatever publishes it.
    """
    config = config or MediaConfig.from_env()
    control = control or ControlPlane.from_live()
    registry = registry if registry is not None else StreamRegistry(config)
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
