"""A media node's stats, from the media plane's own counters: what `/api/v1/stat` shows.

Nothing here runs per packet: the stream counts its bytes and video frames as they come (two
additions), the viewer sessions know their bytes, and the plane's stats loop samples them once a
second (`StreamRates`) to give each stream's bitrate and frame rate over the last seconds. The
snapshot (`node_stat`) is built on that loop and sent to the control plane, which keeps one per
node for the API.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import TYPE_CHECKING

from .codecs import aac, avc, opus, vp8
from .codecs.errors import CodecError

if TYPE_CHECKING:
    from .hub.registry import StreamRegistry
    from .hub.stream import Stream

PROTOCOLS = ("rtmp", "flv", "hls", "webrtc")


class StreamRates:
    """Per stream, (time, bytes in, video frames in) samples over the last `window` seconds."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: dict[str, deque[tuple[float, int, int]]] = {}

    def sample(self, streams: list[Stream], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        live = {s.public_id for s in streams}
        for gone in self._samples.keys() - live:
            del self._samples[gone]
        for stream in streams:
            samples = self._samples.setdefault(stream.public_id, deque())
            samples.append((now, stream.bytes_in, stream.video_frames_in))
            while len(samples) > 2 and now - samples[0][0] > self.window:
                samples.popleft()

    def of(self, public_id: str) -> tuple[int, float]:
        """(bits per second, video frames per second) over the window; zeros before two samples."""
        samples = self._samples.get(public_id)
        if not samples or len(samples) < 2:
            return 0, 0.0
        (t0, b0, f0), (t1, b1, f1) = samples[0], samples[-1]
        span = t1 - t0
        return (round((b1 - b0) * 8 / span), round((f1 - f0) / span, 2)) if span > 0 else (0, 0.0)


def picture(stream: Stream) -> tuple[int, int] | None:
    """The video's width and height, from its configuration (H.264) or last keyframe (VP8)."""
    try:
        if stream.video_codec == "h264" and stream.video_config is not None:
            config = avc.decoder_config_parse(bytes(stream.video_config.unit.payload))
            info = avc.sps_parse(config.sps[0]) if config.sps else None
            return (info.width, info.height) if info else None
        if stream.video_codec == "vp8" and stream.gop:
            return vp8.keyframe_size(bytes(stream.gop[0].unit.payload))
    except CodecError:
        return None
    return None


def sound(stream: Stream) -> dict:
    """The audio's sample rate and channels, from its configuration."""
    config = stream.audio_config
    try:
        if stream.audio_codec == "aac" and config is not None:
            parsed = aac.config_parse(bytes(config.unit.payload))
            return {"sample_rate": parsed.sample_rate, "channels": parsed.channels}
        if stream.audio_codec == "opus":
            channels = opus.opus_head_parse(bytes(config.unit.payload))[0] if config is not None else 2
            return {"sample_rate": 48000, "channels": channels}
    except CodecError:
        pass
    return {}


def stream_stat(stream: Stream, registry: StreamRegistry, rates: StreamRates, transcodes: list) -> dict:
    sessions = registry.viewers.of_stream(stream.public_id)
    by_protocol = Counter(s.protocol for s in sessions)
    bitrate, fps = rates.of(stream.public_id)
    size = picture(stream)
    video = None if stream.video_codec is None else {
        "codec": stream.video_codec, "width": size[0] if size else None, "height": size[1] if size else None,
        "fps": fps, "keyframe_interval": None if stream.keyframe_interval_ms is None
        else round(stream.keyframe_interval_ms / 1000, 2)}
    audio = None if stream.audio_codec is None else {"codec": stream.audio_codec, **sound(stream)}
    return {
        "room_id": stream.public_id,
        "publisher": {"protocol": stream.source_protocol, "address": stream.source_addr},
        "video": video,
        "audio": audio,
        "bitrate_in": bitrate,  # bits/s over the last seconds
        "bytes_in": stream.bytes_in,
        "uptime": round(time.time() - stream.started_at, 1),
        "viewers": {"total": len(sessions), **{p: by_protocol.get(p, 0) for p in PROTOCOLS}},
        "viewer_list": [s.describe() for s in sessions],
        "transcodes": transcodes,
    }


def node_stat(registry: StreamRegistry, rates: StreamRates, node_id: str, started: float,
              transcodes_of=lambda stream: []) -> dict:
    streams = [stream_stat(s, registry, rates, transcodes_of(s)) for s in registry.streams()]
    sent = registry.viewers.bytes_sent()
    return {
        "node": node_id,
        "uptime": round(time.time() - started, 1),
        "streams": streams,
        "totals": {
            "streams": len(streams),
            "viewers": sum(s["viewers"]["total"] for s in streams),
            "bitrate_in": sum(s["bitrate_in"] for s in streams),
            "transcodes": sum(len(s["transcodes"]) for s in streams),
            "bytes_in": registry.bytes_in_ended + sum(s.bytes_in for s in registry.streams()),
            "bytes_out": sum(sent.values()),
        },
    }
