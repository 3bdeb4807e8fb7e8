"""A stream in the codecs a way of watching needs: a derived hub Stream, made once per stream and target.

Players of one protocol need codecs the publisher may not send: WebRTC has no AAC and no B-frames;
HLS, FLV and RTMP players want H.264 and AAC, which a browser does not publish by default. A
`Rendition` is the answer for one source stream and one `Target`: a second `Stream` (same public id)
that readers join like any other. Tracks the target plays as they are pass through synchronously
(the rendition is a sink of the source: no queue, no added latency); the others go through a
`Bridge` (runner.py) each: decode and encode in the bridge's thread, once per stream whatever the
number of viewers. What to do with each track is decided from what the stream really carries
(`plan`), including B-frames seen in the video (`Stream.reordered_frames`), which switch a WebRTC
rendition's video from passthrough to a re-encode on the fly.

A rendition is made by the first reader that needs it (`playable`) and closed once it has had
neither viewer nor reader for `IDLE_AFTER` seconds. Video transcodes are capped per node
(`TRANSCODE_MAX`): past it, WebRTC gets the video as it is (with a note) and H.264/AAC players are
refused (`TranscodeRefused`) with a clear message.
"""
from __future__ import annotations

import asyncio
import logging
import weakref
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from media.codecs import avc
from media.codecs.errors import CodecError
from media.config import MediaConfig
from media.hub.stream import Entry, Stream
from media.hub.unit import AUDIO, DATA, TIME_BASE, VIDEO, AccessUnit
from media.workers import NodeBusy, WorkersFull

from .runner import Bridge

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

IDLE_AFTER = 5.0  # s without a viewer or reader before a rendition and its bridges stop
PASS, CONVERT, DROP = "pass", "convert", "drop"
VIDEO_DECODABLE = frozenset({"h264", "hevc", "vp8", "vp9", "av1"})
_NEEDS_CONFIG = frozenset({"h264", "hevc", "aac"})
BFRAMES_NOTE = ("the video has B-frames, which WebRTC cannot play: WebRTC viewers get it re-encoded without "
                "them; to avoid the re-encode, set B-frames to 0 in the encoder (OBS: Settings > Output > "
                "Streaming, x264 options bframes=0)")
BFRAMES_DROPPED_NOTE = ("the video has B-frames, which WebRTC cannot play: WebRTC viewers get it without them "
                        "(WEBRTC_BFRAMES=drop), at a lower frame rate; set B-frames to 0 in the encoder to avoid it")


@dataclass(frozen=True)
class Target:
    """What one way of watching plays as it is, and what the rest becomes."""

    name: str
    label: str  # for notes: the protocols that watch through it
    video: frozenset[str]
    audio: frozenset[str]
    audio_to: str
    reorder: bool  # plays B-frames
    profile: str  # H.264 profile of a re-encode
    refuse: bool  # past TRANSCODE_MAX: refuse the viewer (else play the video as it is)


WEBRTC = Target("webrtc", "WebRTC", frozenset({"h264", "vp8"}), frozenset({"opus"}), "opus",
                reorder=False, profile="baseline", refuse=False)
H264_AAC = Target("h264-aac", "HLS/HTTP-FLV/RTMP", frozenset({"h264"}), frozenset({"aac"}), "aac",
                  reorder=True, profile="high", refuse=True)

# Node-wide counters (for the stats and metrics): transcodes started/refused by kind.
COUNTERS: Counter[str] = Counter()


class TranscodeRefused(NodeBusy):
    """This node already runs TRANSCODE_MAX video transcodes, or has no worker lane left."""


def _non_reference(unit: AccessUnit) -> bool:
    """An H.264 frame no other frame predicts from (every slice's nal_ref_idc is 0): droppable."""
    try:
        nals = avc.split_avcc(unit.payload)
    except CodecError:
        return False
    slices = [n for n in nals if avc.nal_type(n) in (avc.NAL_SLICE, avc.NAL_IDR)]
    return bool(slices) and all(avc.nal_ref_idc(n) == 0 for n in slices)


class _Budget:
    def __init__(self) -> None:
        self.running = 0

    def take(self, limit: int) -> bool:
        if self.running >= limit:
            return False
        self.running += 1
        return True

    def give(self) -> None:
        self.running = max(0, self.running - 1)


BUDGET = _Budget()


def plan(target: Target, kind: str, codec: str | None, reordered: bool = False) -> str:
    """PASS, CONVERT or DROP for one track of a stream watched through `target`."""
    if codec is None or kind == DATA:
        return PASS
    if kind == VIDEO:
        if codec in target.video and (target.reorder or not reordered):
            return PASS
        return CONVERT if codec in VIDEO_DECODABLE else DROP
    if codec in target.audio:
        return PASS
    convertible = {"opus": {"aac"}, "aac": {"opus"}}[target.audio_to]
    return CONVERT if codec in convertible else DROP


def needs_rendition(stream: Stream, target: Target) -> bool:
    return any(plan(target, kind, codec, stream.reordered_frames > 0) != PASS
               for kind, codec in stream.tracks().items())


def _video_converter(codec: str, target: Target, fragment: float, live_from: int | None):
    from .video import VideoToH264

    def make(config: bytes | None) -> VideoToH264:
        nonlocal live_from
        start, live_from = live_from, None  # only the first converter skips the cached GOP
        return VideoToH264(codec, config, keyframe_interval=fragment, profile=target.profile, live_from=start)
    return make


def _audio_converter(codec: str, target: Target) -> Callable:
    from .audio import AacToOpus, OpusToAac
    return AacToOpus if target.audio_to == "opus" else OpusToAac


class _Arrivals:
    """When the source's units arrived, to stamp converted ones (bridge latency, glass-to-glass)."""

    def __init__(self, by_pts: bool) -> None:
        self.by_pts = by_pts
        self._seen: dict[int, float] = {}
        self._order: deque[tuple[int, float]] = deque(maxlen=1024)

    def note(self, unit: AccessUnit, arrived: float) -> None:
        if self.by_pts:
            self._seen[unit.pts] = arrived
            if len(self._seen) > 512:
                self._seen.pop(next(iter(self._seen)))
        else:
            self._order.append((unit.dts, arrived))

    def take(self, unit: AccessUnit) -> float | None:
        if self.by_pts:
            return self._seen.pop(unit.pts, None)
        # The newest source unit at or before it, kept: one AAC frame (23 ms) may become two Opus ones.
        order = self._order
        while len(order) > 1 and order[1][0] <= unit.dts:
            order.popleft()
        return order[0][1] if order and order[0][0] <= unit.dts else None


class Rendition:
    """`source` as `target` plays it: `self.stream` is what its viewers and readers join."""

    def __init__(self, source: Stream, target: Target) -> None:
        self.source = source
        self.target = target
        self.stream = Stream(source.public_id, source.config, clock=source.clock)
        self.stream.source_protocol = source.source_protocol
        self.stream.parent = source
        self.plans: dict[str, str] = {}
        self.bridges: dict[str, Bridge] = {}
        self.notes: list[str] = []
        self.latency: deque[float] = deque(maxlen=2048)  # s from source arrival to converted output
        self._arrivals: dict[str, _Arrivals] = {}
        self._holds_budget = False
        self._idle: asyncio.TimerHandle | None = None
        self._watched_at = source.clock()
        self.bframes_dropped = 0
        self._reencode_refused = False
        self.closed = False
        for kind, codec in source.tracks().items():
            self._set_plan(kind, codec)
        self._prime()
        source.add_sink(self)
        self._schedule_idle()

    # -- plans -------------------------------------------------------------------------------------

    def _set_plan(self, kind: str, codec: str) -> None:
        decided = plan(self.target, kind, codec, self.source.reordered_frames > 0)
        if decided == CONVERT and self._drops_bframes(kind, codec):
            decided = PASS  # its B-frames are dropped as they come (on_entry), while none is a reference
        if decided == CONVERT and kind == VIDEO and not self._video_budget(codec):
            decided = PASS if codec in self.target.video else DROP
        self.plans[kind] = decided
        if decided == PASS:
            self.stream.declare(kind, codec)
        elif decided == CONVERT:
            self._start_bridge(kind, codec)
        else:
            self.notes.append(f"{kind} {codec} does not play over {self.target.label}")
            log.info("rendition %s/%s: %s %s dropped (no conversion)", self.source.public_id, self.target.name,
                     kind, codec)

    def _drops_bframes(self, kind: str, codec: str) -> bool:
        drop = self.source.config.webrtc_bframes == "drop"
        return drop and kind == VIDEO and codec == "h264" and codec in self.target.video

    def _video_budget(self, codec: str) -> bool:
        if BUDGET.take(self.source.config.video_transcodes_max):
            self._holds_budget = True
            return True
        COUNTERS["video_refused"] += 1
        self._reencode_refused = True
        note = (f"video {codec} is not re-encoded for {self.target.label}: this node already runs "
                f"{self.source.config.video_transcodes_max} video transcodes (TRANSCODE_MAX)")
        log.warning("rendition %s/%s: %s", self.source.public_id, self.target.name, note)
        if self.target.refuse:
            _refusals[self.source] = f"{self.target.label} viewers refused: {note}"
            self._close_now("refused")
            raise TranscodeRefused(note)
        self.notes.append(note)
        return False

    def _start_bridge(self, kind: str, codec: str) -> None:
        source, target = self.source, self.target
        if kind == VIDEO:
            to = "h264"
            newest = source.last_dts(VIDEO)
            make = _video_converter(codec, target, source.config.hls_fragment, newest)
            self.stream.keyframe_source = self._force_keyframe
            if source.reordered_frames:
                self.notes.append(BFRAMES_NOTE)
            skip_before = None
        else:
            to = target.audio_to
            make = _audio_converter(codec, target)
            newest = source.last_dts(AUDIO)
            skip_before = newest - TIME_BASE // 10 if newest is not None else None
        self.stream.declare(kind, to)
        self._arrivals[kind] = _Arrivals(by_pts=kind == VIDEO)
        try:
            self.bridges[kind] = Bridge(source, kind, f"{codec}-{to}", make, self._emitter(kind),
                                        needs_config=codec in _NEEDS_CONFIG, skip_before=skip_before)
        except WorkersFull as exc:
            log.warning("rendition %s/%s: %s", source.public_id, target.name, exc)
            _refusals[source] = f"{target.label} viewers refused: {exc}"
            self._close_now("refused")
            raise TranscodeRefused(str(exc)) from exc
        COUNTERS[f"{kind}_started"] += 1
        log.info("rendition %s/%s: %s %s -> %s started", source.public_id, target.name, kind, codec, to)

    def _force_keyframe(self) -> None:
        bridge = self.bridges.get(VIDEO)
        converter = bridge.converter if bridge is not None else None
        if converter is not None:
            converter.force_keyframe()  # type: ignore[attr-defined]

    def _prime(self) -> None:
        """The source's configuration and GOP cache of the passed tracks, so joiners start at once."""
        source = self.source
        if source.keyframe_source is not None and self.plans.get(VIDEO) == PASS:
            self.stream.keyframe_source = source.keyframe_source
        entries = source.configs() + [e for e in (source.gop or []) if not e.unit.config]
        for entry in entries:
            unit = entry.unit
            if not self._passes(unit.kind):
                continue
            if entry.reordered and not self.target.reorder and self._bframe(unit):
                continue
            self.stream.write(unit, entry.arrived)

    def _passes(self, kind: str) -> bool:
        return self.plans.get(kind, PASS) == PASS

    # -- the Sink protocol -----------------------------------------------------------------------

    def on_entry(self, entry: Entry) -> None:
        unit = entry.unit
        kind = unit.kind
        if kind not in self.plans and kind != DATA:
            self._set_plan(kind, unit.codec)  # a track the source declared late
        decided = self.plans.get(kind, PASS)
        if decided == PASS:
            if entry.reordered and not self.target.reorder and self._bframe(unit):
                return
            self.stream.write(unit, entry.arrived)
        elif decided == CONVERT and not unit.config:
            self._arrivals[kind].note(unit, entry.arrived)

    def _bframe(self, unit: AccessUnit) -> bool:
        """A B-frame (the hub flags it: `Entry.reordered`) in video that passes to a target
        without them: True when it is not passed (dropped, or the video re-encoded from here on)."""
        if unit.codec not in VIDEO_DECODABLE or self.bridges.get(VIDEO) or self._reencode_refused:
            return False  # cannot re-encode it (or may not): it passes as it is
        if self._drops_bframes(VIDEO, unit.codec) and _non_reference(unit):
            if not self.bframes_dropped:
                self.notes.append(BFRAMES_DROPPED_NOTE)
                log.info("rendition %s/%s: %s", self.source.public_id, self.target.name, BFRAMES_DROPPED_NOTE)
            self.bframes_dropped += 1
            return True
        self._switch_to_reencode(unit.codec)
        return True

    def _switch_to_reencode(self, codec: str) -> None:
        """B-frames appeared in video that passed through: re-encode it from here on."""
        if not self._video_budget(codec):
            self.plans[VIDEO] = PASS
            return
        self.plans[VIDEO] = CONVERT
        log.info("rendition %s/%s: %s", self.source.public_id, self.target.name, BFRAMES_NOTE)
        self._start_bridge(VIDEO, codec)

    def _emitter(self, kind: str) -> Callable[[AccessUnit], None]:
        def emit(unit: AccessUnit) -> None:
            if self.closed:
                return
            arrived = None if unit.config else self._arrivals[kind].take(unit)
            now = self.source.clock()
            if arrived is not None:
                self.latency.append(now - arrived)
            self.stream.write(unit, arrived if arrived is not None else now)
        return emit

    def stream_ended(self, reason: str) -> None:
        self._close_now(reason)

    @property
    def viewer_count(self) -> int:
        return self.stream.viewer_count

    # -- life --------------------------------------------------------------------------------------

    def _schedule_idle(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._idle = loop.call_later(IDLE_AFTER / 5, self._check_idle)

    def _check_idle(self) -> None:
        """Stop once nobody has watched through it for IDLE_AFTER (a viewer that reconnects, or a
        player probing then playing, keeps the same conversion)."""
        self._idle = None
        if self.closed:
            return
        now = self.source.clock()
        if self.stream.viewer_count or self.stream.readers:
            self._watched_at = now
        elif now - self._watched_at >= IDLE_AFTER:
            log.info("rendition %s/%s: nobody watches through it; stopped", self.source.public_id, self.target.name)
            self._close_now("idle")
            return
        self._schedule_idle()

    def _close_now(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self._idle is not None:
            self._idle.cancel()
        for bridge in self.bridges.values():
            bridge.stop()
        if self._holds_budget:
            BUDGET.give()
            self._holds_budget = False
        self.source.remove_sink(self)
        if _renditions.get(self.source, {}).get(self.target.name) is self:
            del _renditions[self.source][self.target.name]
        self.stream.close(reason)

    def describe(self) -> dict:
        """For the room's API detail: what each track becomes for this target."""
        converted = {}
        for kind, decided in self.plans.items():
            bridge = self.bridges.get(kind)
            if decided == CONVERT and bridge is not None:
                # dropped: source units the bridge skipped while behind (to the next keyframe)
                converted[kind] = {"from": self.source.tracks().get(kind), "to": self.stream.tracks().get(kind),
                                   "dropped": bridge.dropped}
        return {"target": self.target.label, "transcodes": converted}


_renditions: weakref.WeakKeyDictionary[Stream, dict[str, Rendition]] = weakref.WeakKeyDictionary()
_refusals: weakref.WeakKeyDictionary[Stream, str] = weakref.WeakKeyDictionary()  # the last, per stream


def playable(stream: Stream, target: Target) -> Stream:
    """What a reader of `target` joins: the stream itself, or its rendition for the target.

    Raises TranscodeRefused when the rendition needs a video transcode this node cannot run now.
    """
    if stream.closed or not needs_rendition(stream, target):
        return stream
    by_target = _renditions.setdefault(stream, {})
    rendition = by_target.get(target.name)
    if rendition is None or rendition.closed:
        rendition = Rendition(stream, target)
        by_target[target.name] = rendition
    return rendition.stream


def for_flv(stream: Stream) -> Stream:
    """What an RTMP or HTTP-FLV player joins: an RTMP publisher's stream as it came (FLV carries it),
    any other publisher's as H.264 + AAC."""
    return stream if stream.source_protocol == "rtmp" else playable(stream, H264_AAC)


def transcode_stats(config: MediaConfig) -> dict:
    """Node-wide: video re-encodes running and the cap, and conversions started/refused by kind."""
    return {"video_running": BUDGET.running, "video_max": config.video_transcodes_max, **COUNTERS}


def refusal(stream: Stream) -> str | None:
    """The stream's last refused rendition (TRANSCODE_MAX), for its API detail."""
    return _refusals.get(stream)


def renditions(stream: Stream) -> list[Rendition]:
    return [r for r in _renditions.get(stream, {}).values() if not r.closed]


def rendition_notes(stream: Stream, target: Target) -> list[str]:
    """What viewers through `target` get differently from what the publisher sends."""
    return [note for r in renditions(stream) if r.target is target for note in r.notes]


def latency_ms(rendition: Rendition) -> tuple[float, float] | None:
    """p50/p99 of the conversion latency (ms), None before any converted unit."""
    samples = sorted(rendition.latency)
    if not samples:
        return None
    return samples[len(samples) // 2] * 1000, samples[min(len(samples) - 1, len(samples) * 99 // 100)] * 1000

