"""Media plane settings: plain environment variables with defaults, no Django.

The control plane maps its Django settings onto these names later; tests build a
``MediaConfig`` directly.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True, slots=True)
class MediaConfig:
    bind: str = "0.0.0.0"
    rtmp_port: int = 1935
    http_port: int = 8081
    # Fan-out batching tick (ms). 0 disables the timer: every write flushes at once.
    hub_tick_ms: int = 20
    # With at most this many viewers a stream flushes every unit at once (no tick, no timer):
    # lower latency, and cheaper than a timer wakeup per batch while the viewers are few.
    hub_flush_now_viewers: int = 10
    # A viewer's transport write buffer above this stops writes to it until the next keyframe.
    viewer_max_buffer: int = 1 << 20
    # A viewer behind (paused and not drained) for longer than this (s) is closed.
    viewer_drop_after: float = 5.0
    # GOP cache bounds: past either, the cache is dropped until the next keyframe.
    gop_cache_max_bytes: int = 16 << 20
    gop_cache_max_units: int = 4096
    # Per-stream readers (HLS muxer, recorder, bridges): queue length in units.
    reader_queue_units: int = 1024
    # RTMP: largest message accepted from a peer; idle handshake timeout (s).
    rtmp_max_message_size: int = 8 << 20
    rtmp_handshake_timeout: float = 10.0
    memory_trim_every: float = 60.0  # s between giving freed heap pages back (media/memory.py); 0: never
    malloc_mmap_threshold: int = 128 << 10  # bytes: larger blocks are mapped on their own (media/memory.py)
    rtmp_merged_read_ms: float = 60.0  # a publisher's reads wait for this much of its bytes (media/merged_read.py)
    # s a stream stays open for its viewers after its publisher's connection dropped without an
    # unpublish; the same room publishing again within it continues the stream and its session. 0: off.
    publish_grace: float = 10.0
    # s without a unit from a live publisher after which a new publish with the room's key takes
    # over (the old connection is dead though its transport has not said so yet); needs the grace.
    publish_takeover_after: float = 2.0
    # Media HTTP server: request head limit (bytes) and read timeout (s).
    http_max_header: int = 16 << 10
    http_header_timeout: float = 10.0
    # HLS: segments cut on keyframes near hls_fragment (s), a playlist of hls_playlist_length (s),
    # files removed hls_cleanup_after (s) after the publisher left; HLS_PATH is what nginx may serve.
    hls_enabled: bool = True
    hls_path: str = "var/hls"
    # Recordings: a recording room's stream as fragmented MP4 here (RECORDINGS_PATH), finalized by the control plane.
    record_path: str = "var/recordings"
    hls_fragment: float = 2.0
    hls_playlist_length: float = 60.0
    hls_cleanup_after: float = 60.0
    # A stream that needs a rendition for HLS is segmented on demand: its writer stops after
    # hls_demand_idle s without a playlist request; a first request waits up to hls_demand_wait s.
    hls_demand_idle: float = 30.0
    hls_demand_wait: float = 10.0
    # Low-Latency HLS (media/hls/ll_from_hub.py): CMAF parts of at most llhls_part s, segments cut
    # on the first keyframe at or after llhls_segment s, kept in memory and served on /hls/{id}/ll.m3u8.
    llhls_enabled: bool = False  # off by default until it has its browser test (issue 19)
    llhls_part: float = 0.2
    llhls_segment: float = 1.0
    # A source that makes keyframes only when asked (WebRTC) is asked for one this long (s) after
    # its last while readers that cut on keyframes (HLS, FLV/RTMP joiners) follow it; 0: only when
    # a reader asks. Defaults to HLS_FRAGMENT, so HLS cuts at each.
    source_keyframe_every: float = 2.0
    # Video re-encodes (B-frames, VP8/VP9/AV1/HEVC -> H.264) at once on this node (0: none);
    # None: one per core.
    transcode_max: int | None = None
    # B-frames for WebRTC viewers: "reencode" (smooth at the source's frame rate, a transcode) or
    # "drop" (drop them when none is a reference: no CPU, but the frame rate falls by their share,
    # e.g. 30 -> 7.5 fps with 3 B-frames; a reference B-frame still makes it re-encode).
    webrtc_bframes: str = "reencode"
    # This node's name in the stats and metrics (MEDIA_NODE_ID; default: the host name).
    node_id: str = ""
    # /metrics answers loopback clients, and others that send this as a bearer token ("": none).
    metrics_token: str = ""

    def __post_init__(self) -> None:
        if self.webrtc_bframes not in ("reencode", "drop"):
            raise ValueError(f"WEBRTC_BFRAMES must be reencode or drop, got {self.webrtc_bframes!r}")

    @property
    def video_transcodes_max(self) -> int:
        return (os.cpu_count() or 2) if self.transcode_max is None else self.transcode_max

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MediaConfig:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            bind=env.get("MEDIA_BIND", d.bind) or d.bind,
            rtmp_port=_int(env, "RTMP_PORT", d.rtmp_port),
            http_port=_int(env, "MEDIA_HTTP_PORT", d.http_port),
            hub_tick_ms=_int(env, "HUB_TICK_MS", d.hub_tick_ms),
            hub_flush_now_viewers=_int(env, "HUB_FLUSH_NOW_VIEWERS", d.hub_flush_now_viewers),
            viewer_max_buffer=_int(env, "VIEWER_MAX_BUFFER", d.viewer_max_buffer),
            viewer_drop_after=_float(env, "VIEWER_DROP_AFTER", d.viewer_drop_after),
            gop_cache_max_bytes=_int(env, "GOP_CACHE_MAX_BYTES", d.gop_cache_max_bytes),
            gop_cache_max_units=_int(env, "GOP_CACHE_MAX_UNITS", d.gop_cache_max_units),
            reader_queue_units=_int(env, "READER_QUEUE_UNITS", d.reader_queue_units),
            rtmp_max_message_size=_int(env, "RTMP_MAX_MESSAGE_SIZE", d.rtmp_max_message_size),
            rtmp_handshake_timeout=_float(env, "RTMP_HANDSHAKE_TIMEOUT", d.rtmp_handshake_timeout),
            rtmp_merged_read_ms=_float(env, "RTMP_MERGED_READ_MS", d.rtmp_merged_read_ms),
            publish_grace=_float(env, "PUBLISH_GRACE", d.publish_grace),
            publish_takeover_after=_float(env, "PUBLISH_TAKEOVER_AFTER", d.publish_takeover_after),
            memory_trim_every=_float(env, "MEMORY_TRIM_EVERY", d.memory_trim_every),
            malloc_mmap_threshold=_int(env, "MALLOC_MMAP_THRESHOLD", d.malloc_mmap_threshold),
            http_max_header=_int(env, "MEDIA_HTTP_MAX_HEADER", d.http_max_header),
            http_header_timeout=_float(env, "MEDIA_HTTP_HEADER_TIMEOUT", d.http_header_timeout),
            hls_enabled=env.get("HLS_ENABLED", "1").strip().lower() not in ("0", "false", "no", "off"),
            hls_path=env.get("HLS_PATH") or os.path.join(env.get("VAR_DIR") or "var", "hls"),
            record_path=env.get("RECORDINGS_PATH") or os.path.join(env.get("VAR_DIR") or "var", "recordings"),
            hls_fragment=_float(env, "HLS_FRAGMENT", d.hls_fragment),
            hls_playlist_length=_float(env, "HLS_PLAYLIST_LENGTH", d.hls_playlist_length),
            hls_cleanup_after=_float(env, "HLS_CLEANUP_AFTER", d.hls_cleanup_after),
            hls_demand_idle=_float(env, "HLS_DEMAND_IDLE", d.hls_demand_idle),
            hls_demand_wait=_float(env, "HLS_DEMAND_WAIT", d.hls_demand_wait),
            llhls_enabled=env.get("LLHLS_ENABLED", "0").strip().lower() not in ("0", "false", "no", "off"),
            llhls_part=_float(env, "LLHLS_PART", d.llhls_part),
            llhls_segment=_float(env, "LLHLS_SEGMENT", d.llhls_segment),
            source_keyframe_every=_float(env, "SOURCE_KEYFRAME_EVERY",
                                         _float(env, "HLS_FRAGMENT", d.hls_fragment)),
            transcode_max=_int(env, "TRANSCODE_MAX", -1) if env.get("TRANSCODE_MAX", "").strip() else None,
            webrtc_bframes=env.get("WEBRTC_BFRAMES", "").strip().lower() or d.webrtc_bframes,
            node_id=env.get("MEDIA_NODE_ID", "").strip() or socket.gethostname(),
            metrics_token=env.get("METRICS_TOKEN", "").strip(),
        )
