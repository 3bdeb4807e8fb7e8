"""Start and stop the media plane (RTMP listener + media HTTP server) in the running loop."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry

from rtmp.server import RtmpServer

from .bridges.rendition import BFRAMES_NOTE, CONVERT, DROP, H264_AAC, WEBRTC, Target, plan, refusal, renditions
from .codecs.flv_units import carries as flv_carries
from .config import MediaConfig
from .control import ControlPlane
from .hls.files import HlsFiles
from .hls.from_hub import HlsConfig, HlsService
from .hls.ll_from_hub import LlHlsConfig, LowLatencyService
from .hls.ll_playlist import LowLatencyOptions
from .hls.players import HlsPlayers
from .hls.segmenter import HlsOptions
from .http_server import MediaHttpServer
from .hub.registry import StreamRegistry
from .hub.stream import Stream
from .memory import fix_mmap_threshold, release_free_memory
from .metrics import LoopLag, MediaCollector, MetricsRoute
from .record.from_hub import RecorderService
from .stats import StreamRates, node_stat

log = logging.getLogger(__name__)

STATS_EVERY = 1.0  # viewer counts go to the control plane at most this often per stream
DESCRIBE_EVERY = 10.0  # a stream's description is sent again this often (its cache entry lives 30 s)

def _watch_targets(stream: Stream) -> list[tuple[str, Target | None]]:
    """Each way of watching and the rendition target it uses (None: it plays the stream as it is)."""
    if stream.source_protocol == "rtmp":
        return [("WebRTC", WEBRTC), ("RTMP/HTTP-FLV", None), ("HLS", H264_AAC)]
    return [("WebRTC", WEBRTC), (H264_AAC.label, H264_AAC)]


def long_gop_note(stream: Stream) -> str | None:
    """LL-HLS segments start on keyframes: a GOP over twice LLHLS_SEGMENT makes its segments (and a
    new player's wait for an independent part) that long. None when LL-HLS is off or the GOP fits."""
    interval = stream.keyframe_interval_ms
    limit = 2 * stream.config.llhls_segment * 1000
    if not stream.config.llhls_enabled or interval is None or interval <= limit:
        return None
    return (f"keyframes every {interval / 1000:.1f} s: LL-HLS segments are that long and players start "
            f"slower; set the keyframe interval to {stream.config.llhls_segment:g} s for LL-HLS")


def stream_media(stream: Stream) -> dict:
    """What a stream carries, what each way of watching gets, and the transcodes running for it."""
    tracks = stream.tracks()
    reordered = stream.reordered_frames > 0
    notes = []
    for kind, codec in tracks.items():
        for way, target in _watch_targets(stream):
            if target is None:
                if not flv_carries(codec):
                    notes.append(f"{kind} {codec} does not play over {way}")
                continue
            decided = plan(target, kind, codec, reordered)
            if decided == DROP:
                notes.append(f"{kind} {codec} does not play over {way}")
            elif decided == CONVERT:
                to = "h264" if kind == "video" else target.audio_to
                notes.append(f"{kind} {codec} is converted to {to} for {way} viewers, once for the stream "
                             f"while they watch")
    if reordered and tracks.get("video") in WEBRTC.video:
        notes.append(BFRAMES_NOTE)
    for rendition in renditions(stream):
        notes += [n for n in rendition.notes if n not in notes]
    if (refused := refusal(stream)) is not None:
        notes.append(refused)
    if (gop := long_gop_note(stream)) is not None:
        notes.append(gop)
    transcodes = [{"for": r.target.label, "kind": kind, **change}
                  for r in renditions(stream) for kind, change in r.describe()["transcodes"].items()]
    return {"publisher": stream.source_protocol, "tracks": tracks, "notes": notes, "transcodes": transcodes}


@dataclass(frozen=True, slots=True)
class NodeControl:
    """The MediaControl implementation: staff drops and staff recording, for the streams held here."""

    registry: StreamRegistry
    recorder: RecorderService | None
    control: ControlPlane

    async def drop_publisher(self, public_id: str, reason: str) -> bool:
        return await self.registry.drop_publisher(public_id, reason)

    async def recording_start(self, public_id: str) -> bool:
        """Record the live stream now (a new Recording row), unless it is not here or already recording."""
        recorder, wanted = self.recorder, self.control.recording_wanted
        if recorder is None or wanted is None or not recorder.can_start(public_id):
            return False
        plan = await wanted(public_id, staff=True)
        if plan is None:
            return False
        if not recorder.start(public_id, plan):  # the stream ended, or started recording, meanwhile
            await recorder.done(plan, None, "not_started")
            return False
        return True

    async def recording_stop(self, public_id: str) -> bool:
        return self.recorder is not None and self.recorder.stop(public_id)

    async def viewer_drop(self, viewer_id: str) -> bool:
        return self.registry.viewers.drop(viewer_id)


@dataclass(eq=False)
class MediaPlane:
    config: MediaConfig
    control: ControlPlane
    registry: StreamRegistry
    rtmp: RtmpServer
    http: MediaHttpServer
    hls: HlsService | None = None
    llhls: LowLatencyService | None = None
    recorder: RecorderService | None = None
    rtmp_port: int = 0
    http_port: int = 0
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _reported: dict[str, int] = field(default_factory=dict)
    _described: dict[str, tuple[dict, float]] = field(default_factory=dict)
    rates: StreamRates = field(default_factory=StreamRates)
    started: float = field(default_factory=time.time)
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    loop_lag: LoopLag = field(init=False)
    stopped: bool = False

    def __post_init__(self) -> None:
        self.loop_lag = LoopLag(self.metrics)

    @property
    def node_control(self) -> NodeControl:
        """What the control plane's staff actions reach on this node (``live.media_control``)."""
        return NodeControl(self.registry, self.recorder, self.control)

    def own(self, task: asyncio.Task) -> None:
        """A task that lives as long as the plane (cancelled by stop())."""
        self._tasks.append(task)

    async def _stats_loop(self) -> None:
        loop = asyncio.get_running_loop()
        trim_every = self.config.memory_trim_every
        trimmed = loop.time()
        while True:
            await self.loop_lag.sleep(STATS_EVERY)
            self.rtmp.tick_merged_reads(loop.time())
            if trim_every > 0 and loop.time() - trimmed >= trim_every:
                trimmed = loop.time()
                loop.run_in_executor(None, release_free_memory)  # a few ms: off the loop
            self.rates.sample(self.registry.streams())
            if self.hls is not None and self.hls.players is not None:
                self.hls.players.sweep()
            await self.report_viewers()
            await self.report_media()
            await self.report_stat()

    def node_stat(self) -> dict:
        """This node's streams, viewers and totals (`media.stats`), as /api/v1/stat shows them."""
        def transcodes(stream: Stream) -> list:
            return stream_media(stream)["transcodes"]

        return node_stat(self.registry, self.rates, self.config.node_id, self.started, transcodes)

    async def report_stat(self) -> None:
        if self.control.node_stat_report is None:
            return
        try:
            await self.control.node_stat_report(stat=self.node_stat())
        except Exception:
            log.exception("media: node_stat_report failed")

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
        """Push changed viewer counts, one call per stream whose count changed. The count is the
        stream's viewer sessions (RTMP, FLV, WebRTC and HLS players alike)."""
        viewers = self.registry.viewers
        live = {s.public_id: max(s.viewer_count, viewers.count(s.public_id)) for s in self.registry.streams()}
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
        if self.recorder is not None:
            await self.recorder.stop_all()  # each file closed cleanly and reported
        self.registry.close_all("error")
        if self.hls is not None:
            await self.hls.stop()
        if self.llhls is not None:
            await self.llhls.stop()
        await self.http.stop()
        log.info("media plane stopped")


def _start_llhls(config: MediaConfig, registry: StreamRegistry) -> LowLatencyService | None:
    if not config.llhls_enabled:
        return None
    llhls = LowLatencyService(LlHlsConfig(LowLatencyOptions(config.llhls_part, config.llhls_segment),
                                          keep_after_end=config.hls_cleanup_after))
    registry.on_start.append(llhls.stream_started)
    return llhls


def _start_hls(config: MediaConfig, registry: StreamRegistry, http: MediaHttpServer,
               llhls: LowLatencyService | None = None) -> HlsService | None:
    """MPEG-TS HLS; LL-HLS names under /hls/{id}/ go to `llhls` first (media/hls/ll_from_hub.py)."""
    if not config.hls_enabled:
        if llhls is not None:
            http.add_route("/hls/", llhls.route(None))
        return None
    root = Path(config.hls_path).resolve()
    hls = HlsService(HlsConfig(root=root, options=HlsOptions(config.hls_fragment, config.hls_playlist_length),
                               cleanup_after=config.hls_cleanup_after, demand_idle=config.hls_demand_idle,
                               demand_wait=config.hls_demand_wait))
    if removed := hls.remove_stale():
        log.info("hls: removed %d stale file(s) from %s", removed, root)
    registry.on_start.append(hls.stream_started)
    registry.on_resume.append(hls.stream_resumed)
    players = HlsPlayers(registry.viewers, idle=max(10.0, 4 * config.hls_fragment))
    hls.players = players
    if llhls is not None:
        llhls.players = players  # LL players are viewers too
    files = HlsFiles(root, hls.demand, players, lambda public_id: public_id in registry, http.holder_of).handle
    http.add_route("/hls/", files if llhls is None else llhls.route(files))
    return hls


def _start_recorder(config: MediaConfig, registry: StreamRegistry, control: ControlPlane) -> RecorderService | None:
    if control.recording_wanted is None or control.recording_done is None:
        return None
    root = Path(config.record_path).resolve()
    root.mkdir(parents=True, exist_ok=True)
    recorder = RecorderService(root, control.recording_wanted, control.recording_done)
    registry.on_start.append(recorder.stream_started)
    return recorder


_planes: list[MediaPlane] = []


def current_plane() -> MediaPlane | None:
    """The media plane running in this process (the web's /metrics and tests read it), if any."""
    return _planes[0] if _planes and not _planes[0].stopped else None


async def start_media_plane(
    config: MediaConfig | None = None,
    control: ControlPlane | None = None,
    *,
    register_control: bool = True,
    registry: StreamRegistry | None = None,
) -> MediaPlane:
    """Start the RTMP and media HTTP servers; bound ports are on the returned plane.

    ``config`` defaults to ``MediaConfig.from_env()``, ``control`` to ``live.media_api``.
    The plane's ``node_control`` is registered as the ``MediaControl`` (staff actions) when the control plane
    offers a register hook and ``register_control`` is true. Pass ``registry`` to share one with
    other sources in the process (the WebRTC SFU): one stream per room, whatever publishes it.
    """
    config = config or MediaConfig.from_env()
    fix_mmap_threshold(config.malloc_mmap_threshold)  # for the process: see media/memory.py
    control = control or ControlPlane.from_live()
    registry = registry if registry is not None else StreamRegistry(config)
    registry.viewers.authorize, registry.viewers.ended = control.play_started, control.play_ended
    rtmp = RtmpServer(config, registry, control)
    http = MediaHttpServer(config, registry, control)
    llhls = _start_llhls(config, registry)
    plane = MediaPlane(config, control, registry, rtmp, http, hls=_start_hls(config, registry, http, llhls),
                       llhls=llhls, recorder=_start_recorder(config, registry, control))
    try:
        plane.rtmp_port = await rtmp.start(config.bind, config.rtmp_port)
        plane.http_port = await http.start(config.bind, config.http_port)
    except BaseException:
        await plane.stop()
        raise
    plane._tasks.append(asyncio.get_running_loop().create_task(plane._stats_loop(), name="media-stats"))
    plane.metrics.register(MediaCollector(plane))
    for collector in control.metrics_collectors() if control.metrics_collectors else []:
        plane.metrics.register(collector)
    http.add_route("/metrics", MetricsRoute(plane.metrics, config.metrics_token).handle)
    _planes[:] = [plane]
    if register_control and control.media_control_register is not None:
        task = control.media_control_register(plane.node_control)
        if isinstance(task, asyncio.Task):
            plane._tasks.append(task)
    log.info("media plane: rtmp on %s:%d, http on %s:%d", config.bind, plane.rtmp_port, config.bind, plane.http_port)
    return plane
