"""Prometheus metrics of a media node (prometheus_client), read from the media plane's own
counters when scraped: nothing is updated per packet or per viewer for them.

`MediaCollector(plane)` yields the families below; `LoopLag` is how late the plane's once-a-second
stats task wakes from its sleep (its own probe task, waking four times a second, cost an idle node
more than all its other timers). `exposition(registry)` is the text served at
`/metrics` on the media HTTP port (and, with the control plane's collector, on the web port).

| metric                                         | type      | labels            |
|------------------------------------------------|-----------|-------------------|
| microvibe_streams                              | gauge     | node              |
| microvibe_viewers                              | gauge     | node, protocol    |
| microvibe_received_bytes_total                 | counter   | node              |
| microvibe_sent_bytes_total                     | counter   | node, protocol    |
| microvibe_sessions_started_total               | counter   | node              |
| microvibe_sessions_ended_total                 | counter   | node, reason      |
| microvibe_publish_refusals_total               | counter   | node, reason      |
| microvibe_play_refusals_total                  | counter   | node, reason      |
| microvibe_viewer_sessions_total                | counter   | node, protocol    |
| microvibe_slow_viewer_skips_total              | counter   | node              |
| microvibe_slow_viewer_drops_total              | counter   | node              |
| microvibe_hls_segments_total                   | counter   | node              |
| microvibe_transcodes_running                   | gauge     | node              |
| microvibe_transcodes_total                     | counter   | node, kind, outcome |
| microvibe_recordings_running                   | gauge     | node              |
| microvibe_event_loop_lag_seconds               | histogram | (none)            |
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .bridges.rendition import BUDGET, COUNTERS, renditions
from .stats import PROTOCOLS
from .workers import pool

if TYPE_CHECKING:
    from .runtime import MediaPlane

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _family(kind, name: str, doc: str, labels: list[str], values: dict[tuple, float]) -> Metric:
    family = kind(name, doc, labels=labels)
    for label_values, value in values.items():
        family.add_metric(list(label_values), value)
    return family


class MediaCollector:
    def __init__(self, plane: MediaPlane) -> None:
        self.plane = plane

    def collect(self) -> Iterator[Metric]:
        plane = self.plane
        node = plane.config.node_id
        registry = plane.registry
        streams = registry.streams()
        viewers = registry.viewers
        by_protocol = {p: 0 for p in PROTOCOLS}
        for session in viewers.all():
            by_protocol[session.protocol] = by_protocol.get(session.protocol, 0) + 1
        sent = viewers.bytes_sent()
        skips, drops = registry.slow_ended
        for stream in streams:
            for s in (stream, *(r.stream for r in renditions(stream))):
                s_skips, s_drops = s.slow_counts()
                skips, drops = skips + s_skips, drops + s_drops
        g, c = GaugeMetricFamily, CounterMetricFamily
        yield _family(g, "microvibe_streams", "Live streams on this node.", ["node"], {(node,): len(streams)})
        yield _family(g, "microvibe_viewers", "Players watching now, by protocol.", ["node", "protocol"],
                      {(node, p): n for p, n in by_protocol.items()})
        yield _family(c, "microvibe_received_bytes", "Media bytes received from publishers.", ["node"],
                      {(node,): registry.bytes_in_ended + sum(s.bytes_in for s in streams)})
        yield _family(c, "microvibe_sent_bytes", "Media bytes sent to players, by protocol.", ["node", "protocol"],
                      {(node, p): sent.get(p, 0) for p in PROTOCOLS})
        yield _family(c, "microvibe_sessions_started", "Live sessions started (publishes accepted).", ["node"],
                      {(node,): registry.started})
        yield _family(c, "microvibe_sessions_ended", "Live sessions ended, by end reason.", ["node", "reason"],
                      {(node, r): n for r, n in registry.ended_reasons.items()})
        yield _family(c, "microvibe_publish_refusals", "Publishes refused, by reason.", ["node", "reason"],
                      {(node, r): n for r, n in registry.publish_refused.items()})
        yield _family(c, "microvibe_play_refusals", "Plays refused, by reason.", ["node", "reason"],
                      {(node, r): n for r, n in viewers.refused.items()})
        yield _family(c, "microvibe_viewer_sessions", "Players that started, by protocol.", ["node", "protocol"],
                      {(node, p): viewers.opened.get(p, 0) for p in PROTOCOLS})
        yield _family(c, "microvibe_slow_viewer_skips", "Times a slow viewer's full buffer made it skip to a "
                      "keyframe.", ["node"], {(node,): skips})
        yield _family(c, "microvibe_slow_viewer_drops", "Viewers closed for staying behind.", ["node"],
                      {(node,): drops})
        yield _family(c, "microvibe_hls_segments", "HLS segments written.", ["node"],
                      {(node,): plane.hls.segments_written if plane.hls else 0})
        yield _family(g, "microvibe_transcodes_running", "Video transcodes running.", ["node"],
                      {(node,): BUDGET.running})
        outcomes = {}
        for key, n in COUNTERS.items():  # e.g. "video_started", "audio_started", "video_refused"
            kind, _, outcome = key.partition("_")
            outcomes[(node, kind, outcome)] = n
        yield _family(c, "microvibe_transcodes", "Transcodes started or refused, by kind.",
                      ["node", "kind", "outcome"], outcomes)
        yield _family(g, "microvibe_recordings_running", "Recordings being written.", ["node"],
                      {(node,): plane.recorder.active if plane.recorder else 0})
        workers = pool()
        yield _family(g, "microvibe_worker_lanes", "Per-stream jobs (HLS, recording, bridges) on the worker pool.",
                      ["node"], {(node,): workers.lanes})
        yield _family(g, "microvibe_worker_lanes_max", "The worker pool's lane cap (MEDIA_WORKER_LANES).",
                      ["node"], {(node,): workers.max_lanes})
        yield _family(c, "microvibe_worker_lanes_refused", "Per-stream jobs refused: every lane was taken.",
                      ["node"], {(node,): workers.refused})


class LoopLag:
    """How late the event loop runs a sleep: the lag every task on it sees."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.histogram = Histogram("microvibe_event_loop_lag_seconds", "How late the media plane's event loop "
                                   "wakes from a sleep.", buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25,
                                                                   0.5, 1.0), registry=registry)

    async def sleep(self, seconds: float) -> None:
        """asyncio.sleep, with how late it returned observed."""
        loop = asyncio.get_running_loop()
        due = loop.time() + seconds
        await asyncio.sleep(seconds)
        self.histogram.observe(max(0.0, loop.time() - due))


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def metrics_allowed(client_ip: str, authorization: str, token: str) -> bool:
    """Who may read /metrics: a client on loopback, or one sending `Authorization: Bearer
    METRICS_TOKEN` when a token is set (anyone else: 403)."""
    try:
        if ipaddress.ip_address(client_ip.strip("[]")).is_loopback:
            return True
    except ValueError:
        pass
    scheme, _, given = authorization.partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


class MetricsRoute:
    """`GET /metrics` on the media HTTP server."""

    def __init__(self, registry: CollectorRegistry, token: str) -> None:
        self.registry = registry
        self.token = token

    def handle(self, conn, req) -> None:
        if req.method not in ("GET", "HEAD"):
            conn.respond(405, "method not allowed\n", headers=[("Allow", "GET, HEAD")], keep_alive=req.keep_alive)
            return
        if not metrics_allowed(conn.peer.rsplit(":", 1)[0], req.headers.get("authorization", ""), self.token):
            conn.respond(403, "metrics: loopback only, or Authorization: Bearer METRICS_TOKEN\n",
                         keep_alive=req.keep_alive)
            return
        conn.respond(200, exposition(self.registry), content_type=CONTENT_TYPE, keep_alive=req.keep_alive,
                     head_only=req.method == "HEAD")
