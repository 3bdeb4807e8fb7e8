"""A WebRTC publisher as a hub source: reassembled RTP frames become access units.

Frames arrive from the receiver hook (`ForwardJitterBuffer`): VP8 frames as they are, H.264 in
Annex B (aiortc's depayloader), Opus packets. H.264 becomes length-prefixed NAL units (the hub's
form); its SPS/PPS are taken from the stream in-band and written as a configuration unit whenever
they change, so FLV, RTMP and HLS readers get the decoder configuration they expect.

One clock for all tracks of a publisher (`PublisherClock`): each track's RTP time is mapped to the
sender's NTP time through its latest RTCP sender report, so audio and video keep the lip sync the
sender gave them. Until a track's first report it is anchored on its first frame's arrival; the
first report of the publisher measures the sender's clock against ours and shifts the origin
so the timeline never jumps. Another track's first report may disagree with its arrival anchor by
the difference of the tracks' network delays: that step is slewed away over the next frames (each
frame's spacing kept within `SLEW` of its RTP spacing) rather than taken at once, since a step back
would give two frames one timestamp. Later reports move a track's mapping only when they disagree
with it by more than `REPORT_JITTER`, and then by slewing too: a sender stamps a report with the
time it sent the frame (aiortc: after encoding it), which varies by tens of ms from frame to frame,
and following each report at once made a picture's timestamp jump by a frame now and then. Hub
time 0 is the publisher's first frame.

A lost frame (the jitter buffer gave up on it) makes the track drop everything up to the next
keyframe and ask the publisher for one: readers see a gap in time, never a broken picture.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from media.codecs import avc, vp8
from media.codecs.errors import CodecError
from media.codecs.opus import opus_head
from media.hub.stream import Stream
from media.hub.unit import AUDIO, TIME_BASE, VIDEO, AccessUnit

log = logging.getLogger(__name__)

NTP_TO_UNIX = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)
SLEW = 0.1  # at most this share of a frame's RTP spacing goes into absorbing a clock step
REPORT_JITTER = 0.05  # s: a later sender report closer than this to the track's mapping leaves it


class PublisherClock:
    """One timeline for a publisher's tracks, in hub ticks from its first frame."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self.wall = wall
        self.origin: float | None = None  # sender-clock seconds of hub time 0
        self.offset: float | None = None  # sender clock minus ours, set by the first report

    def track(self, clock_rate: int) -> TrackClock:
        return TrackClock(self, clock_rate)

    def ticks(self, t: float) -> int:
        if self.origin is None:
            self.origin = t
        return round((t - self.origin) * TIME_BASE)


class TrackClock:
    def __init__(self, owner: PublisherClock, clock_rate: int) -> None:
        self.owner = owner
        self.rate = clock_rate
        self.report: tuple[float, int] | None = None  # (sender seconds, unwrapped RTP) of the last SR
        self.anchor: tuple[float, int] | None = None  # (our seconds, unwrapped RTP) of the first frame
        self.last_rtp: int | None = None
        self.slew = 0.0  # s still to absorb: the arrival mapping minus the report's, at the switch

    def _unwrap(self, rtp32: int) -> int:
        last = self.last_rtp
        if last is None:
            return rtp32
        value = (last & ~0xFFFFFFFF) | rtp32
        if value - last > 1 << 31:
            value -= 1 << 32
        elif last - value > 1 << 31:
            value += 1 << 32
        return value

    def sender_report(self, ntp64: int, rtp32: int) -> None:
        sender = ntp64 / (1 << 32) - NTP_TO_UNIX
        rtp = self._unwrap(rtp32)
        owner = self.owner
        if owner.offset is None:
            # Ours until now: measure the sender's clock so this track's timeline stays continuous.
            ours = self._ours(rtp) if self.anchor is not None else owner.wall()
            owner.offset = sender - ours
            if owner.origin is not None:
                owner.origin += owner.offset
        elif self.report is None and self.anchor is not None:
            self.slew = self._ours(rtp) + owner.offset - sender
        elif self.report is not None:
            old_sender, old_rtp = self.report
            moved = old_sender + (rtp - old_rtp) / self.rate - sender
            if abs(moved) < REPORT_JITTER:
                return  # the sender's stamping jitter (or a drift still too small to correct)
            self.slew += moved  # continuous at the switch, absorbed over the next frames
        self.report = (sender, rtp)

    def _ours(self, rtp: int) -> float:
        t0, rtp0 = self.anchor  # type: ignore[misc]
        return t0 + (rtp - rtp0) / self.rate

    def dts(self, rtp: int) -> int:
        """Hub ticks of a frame with this (unwrapped) RTP timestamp."""
        last, self.last_rtp = self.last_rtp, rtp
        if self.report is not None:
            sender, rtp0 = self.report
            if self.slew and last is not None and rtp > last:
                step = min(abs(self.slew), SLEW * (rtp - last) / self.rate)
                self.slew -= step if self.slew > 0 else -step
            return self.owner.ticks(sender + (rtp - rtp0) / self.rate + self.slew)
        if self.anchor is None:
            self.anchor = (self.owner.wall(), rtp)
        return self.owner.ticks(self._ours(rtp) + (self.owner.offset or 0.0))


class TrackToHub:
    """One published track: the sink of its receiver's jitter buffer."""

    def __init__(self, source: WebRtcSource, kind: str, codec: str, clock_rate: int) -> None:
        self.source = source
        self.kind = kind
        self.codec = codec.lower()
        self.clock = source.clock.track(clock_rate)
        self.frames = 0
        self.bytes = 0
        self.dropped_after_loss = 0
        self._broken = kind == VIDEO  # video starts at a keyframe
        self._params: tuple[bytes, bytes] | None = None
        self._configured = False

    def sender_report(self, ntp64: int, rtp32: int) -> None:
        self.clock.sender_report(ntp64, rtp32)

    def on_frame(self, data: bytes, timestamp: int, arrived: float, after_loss: bool) -> None:
        self.frames += 1
        self.bytes += len(data)
        stream = self.source.stream
        if stream is None or stream.closed:
            return
        if self.kind == AUDIO:
            self._write_audio(stream, data, timestamp, arrived)
            return
        try:
            nals = avc.split_annexb(data) if self.codec == "h264" else None
            keyframe = avc.has_idr(nals) if nals is not None else vp8.is_keyframe(data)
        except CodecError as exc:
            log.info("webrtc %s: unreadable %s frame dropped: %s", stream.public_id, self.codec, exc)
            nals, keyframe, after_loss = None, False, True
        if after_loss:
            self._broken = True
        if self._broken:
            if not keyframe:
                self.dropped_after_loss += 1
                self.source.request_keyframe()
                return
            self._broken = False
        dts = self.clock.dts(timestamp)
        if keyframe:
            self.source.keyframe_seen()
        if nals is None:
            stream.write(AccessUnit(VIDEO, "vp8", dts, dts, data, keyframe=keyframe), arrived)
        elif nals:
            self._write_h264(stream, nals, keyframe, dts, arrived)

    def _write_audio(self, stream: Stream, data: bytes, timestamp: int, arrived: float) -> None:
        dts = self.clock.dts(timestamp)
        if not self._configured:
            self._configured = True
            stream.write(AccessUnit(AUDIO, self.codec, dts, dts, opus_head(), config=True), arrived)
        stream.write(AccessUnit(AUDIO, self.codec, dts, dts, data, keyframe=True), arrived)

    def _write_h264(self, stream: Stream, nals: list[bytes], keyframe: bool, dts: int, arrived: float) -> None:
        sps, pps = avc.parameter_sets(nals)
        if sps and pps and (sps[0], pps[0]) != self._params:
            try:
                avc.sps_parse(sps[0])  # refuse a broken SPS before readers configure from it
                record = avc.decoder_config_build(sps[:1], pps[:1])  # MalformedData: a set over 64 KiB
            except CodecError as exc:
                log.info("webrtc %s: unusable SPS/PPS ignored: %s", stream.public_id, exc)
            else:
                self._params = (sps[0], pps[0])
                stream.write(AccessUnit(VIDEO, "h264", dts, dts, record, config=True), arrived)
        payload = avc.nals_to_avcc(nals)
        stream.write(AccessUnit(VIDEO, "h264", dts, dts, payload, keyframe=keyframe), arrived)


class WebRtcSource:
    """A publisher's tracks writing into one hub stream (set with `attach` once it exists).

    A WebRTC encoder makes a keyframe only when asked; while the stream has readers that cut or
    join on keyframes (HLS, a recorder, RTMP/FLV viewers) it is asked for one
    `source_keyframe_every` seconds after the last (default HLS_FRAGMENT), so that keyframe arrives
    just after the segment's target length and HLS cuts there.
    """

    def __init__(self, request_keyframe: Callable[[], None]) -> None:
        self.request_keyframe = request_keyframe
        self.clock = PublisherClock()
        self.tracks: dict[str, TrackToHub] = {}
        self.stream: Stream | None = None
        self._timer: asyncio.TimerHandle | None = None

    def track(self, kind: str, codec: str, clock_rate: int) -> TrackToHub:
        track = self.tracks[kind] = TrackToHub(self, kind, codec, clock_rate)
        return track

    def attach(self, stream: Stream) -> None:
        """Start writing into `stream`; it learns the negotiated codecs before the first frame."""
        for kind, track in self.tracks.items():
            stream.declare(kind, track.codec)
        stream.keyframe_source = self.request_keyframe
        self.stream = stream
        self.keyframe_seen()

    def keyframe_seen(self) -> None:
        """A video keyframe went into the stream: the next is due `source_keyframe_every` from now."""
        stream = self.stream
        if stream is None or VIDEO not in self.tracks or stream.config.source_keyframe_every <= 0:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(stream.config.source_keyframe_every, self._due)

    def _due(self) -> None:
        self._timer = None
        stream = self.stream
        if stream is None or stream.closed:
            return
        if stream.readers or stream.fanout_viewers:
            self.request_keyframe()
        self.keyframe_seen()  # ask again if that one never comes

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def bytes_received(self) -> int:
        return sum(t.bytes for t in self.tracks.values())
