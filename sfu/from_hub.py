"""WebRTC viewers as hub readers: each unit packetized once per stream, sent to every subscriber.

`StreamOut` is a sink of one hub stream (any publisher: RTMP, WHIP, a call peer) with one
`TrackOut` per kind that WebRTC can carry (H.264 without B-frames, VP8, Opus; a stream with AAC or
B-frames is watched through its WebRTC rendition, `media/bridges/rendition.py`, which converts them
once per stream while WebRTC viewers watch). Each unit is turned into the RTP
payloads once (H.264: length-prefixed NALUs to Annex B, SPS/PPS put before every IDR that lacks
them) and handed synchronously, in one pass, to every subscriber's `RtpOutput`
(sfu/aiortc_hooks.py): each subscriber only adds its RTP headers, SRTP-protects and sends the frame
in one system call. No per-subscriber queue or task; the order of subscribers rotates every frame.

A subscriber starts at a keyframe. From a source that can make one (WebRTC: a PLI, throttled) it
asks for one. From one that cannot (RTMP) it starts from the GOP cache at once: the cached video
frames are sent with their RTP timestamps squeezed 1 ms apart and ending at the newest cached
frame's own timestamp, so the browser decodes through them and shows the current picture at once
without building a GOP's worth of playout delay; they are paced out at `GOP_BURST_BYTES` per
`GOP_BURST_TICK` (about 100 Mbit/s) so no socket buffer overflows, and live frames queue behind
them until the backlog is out. A subscriber whose frame cannot go out whole (socket buffer full)
skips to the next keyframe; the publisher and the other subscribers never wait.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from media.codecs import avc
from media.codecs.errors import CodecError
from media.hub.stream import Entry, Stream
from media.hub.unit import AUDIO, TIME_BASE, VIDEO

from .aiortc_hooks import Packetizer, RtpOutput
from .stats import Samples

log = logging.getLogger(__name__)

OPUS_RATE = 48_000
GOP_BURST_BYTES = 48 * 1024
GOP_BURST_TICK = 0.004  # s
SQUEEZE = TIME_BASE // 1000  # RTP ticks between squeezed GOP frames (1 ms)


def webrtc_codec(kind: str, codec: str | None, config: Entry | None) -> RTCRtpCodecParameters | None:
    """The RTP codec a stream's track goes out as, or None."""
    if kind == AUDIO:
        if codec == "opus":
            return RTCRtpCodecParameters(mimeType="audio/opus", clockRate=OPUS_RATE, channels=2)
        return None
    if codec == "vp8":
        return RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000)
    if codec == "h264":
        profile = "42e01f"
        if config is not None:
            try:
                sps = avc.decoder_config_parse(config.unit.payload).sps
                profile = avc.profile_level_id(sps[0]) if sps else profile
            except CodecError:
                pass
        return RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, parameters={
            "level-asymmetry-allowed": "1", "packetization-mode": "1", "profile-level-id": profile})
    return None


def _start_code_free(nals: tuple[bytes, ...] | list[bytes]) -> bool:
    """No NAL unit holds 00 00 01 (H.264 7.4.1 forbids it): aiortc's packetizer splits Annex B there and
    fails on the empty unit that makes (IndexError), so a publisher's unit with one is not sent."""
    return not any(b"\x00\x00\x01" in nal for nal in nals)


class Frame:
    __slots__ = ("payloads", "timestamp", "keyframe", "arrived", "size")

    def __init__(self, payloads: list[bytes], timestamp: int, keyframe: bool, arrived: float, size: int) -> None:
        self.payloads = payloads
        self.timestamp = timestamp
        self.keyframe = keyframe
        self.arrived = arrived
        self.size = size


class TrackOut:
    """One kind of one stream, out to every WebRTC subscriber."""

    def __init__(self, owner: StreamOut, kind: str, codec: RTCRtpCodecParameters) -> None:
        self.owner = owner
        self.kind = kind
        self.codec = codec
        self.subscribers: set[SubscriberTrack] = set()
        self.latency = owner.latency
        self.frames = 0
        self.ended = False
        self._packetizer = Packetizer(codec)
        self._order: tuple[SubscriberTrack, ...] = ()
        self._parameter_sets = b""  # SPS + PPS in Annex B, from the stream's configuration

    @property
    def stream(self) -> Stream:
        return self.owner.stream

    def request_keyframe(self) -> None:
        self.stream.request_keyframe()

    # -- units in --------------------------------------------------------------------------------

    def on_entry(self, entry: Entry) -> None:
        unit = entry.unit
        if unit.config:
            if unit.codec == "h264":
                self._configure(unit.payload)
            return
        order = self._order
        if not order:
            return
        frame = self.frame(entry)
        if frame is None:
            return
        self.frames += 1
        first = self.frames % len(order)
        for subscriber in order[first:]:
            subscriber.push(frame)
        for subscriber in order[:first]:
            subscriber.push(frame)

    def _configure(self, record: bytes) -> None:
        try:
            config = avc.decoder_config_parse(record)
        except CodecError:
            return
        if not _start_code_free((*config.sps, *config.pps)):
            return
        self._parameter_sets = avc.nals_to_annexb((*config.sps, *config.pps))

    def frame(self, entry: Entry, timestamp: int | None = None) -> Frame | None:
        """The entry's RTP payloads (with its own RTP timestamp unless one is given)."""
        unit = entry.unit
        data = unit.payload
        if unit.codec == "h264":
            try:
                nals = avc.split_avcc(data)
            except CodecError:
                return None
            if not _start_code_free(nals):
                return None
            data = avc.nals_to_annexb(nals)
            if unit.keyframe and self._parameter_sets and not any(avc.nal_type(n) == avc.NAL_SPS for n in nals):
                data = self._parameter_sets + data
        if timestamp is None:
            timestamp = unit.pts if self.kind == VIDEO else unit.dts * OPUS_RATE // TIME_BASE
        payloads, rtp_timestamp = self._packetizer.pack(data, timestamp)
        return Frame(payloads, rtp_timestamp, unit.keyframe, entry.arrived, len(unit.payload))

    # -- subscribers -----------------------------------------------------------------------------

    def subscribe(self) -> SubscriberTrack:
        track = SubscriberTrack(self)
        self.subscribers.add(track)
        self._order = tuple(self.subscribers)
        self.owner.viewers_changed()
        if self.kind == VIDEO:
            self.request_keyframe()
        return track

    def unsubscribe(self, track: SubscriberTrack) -> None:
        self.subscribers.discard(track)
        self._order = tuple(self.subscribers)
        track.stop()
        self.owner.viewers_changed()

    def gop_frames(self) -> list[Frame]:
        """This kind's frames of the GOP cache, squeezed to end at the newest one's timestamp."""
        gop = self.stream.gop or []
        entries = [e for e in gop if e.unit.kind == self.kind and not e.unit.config]
        if not entries or not entries[0].unit.keyframe:
            return []
        last = entries[-1].unit.pts
        frames = []
        for index, entry in enumerate(entries):
            frame = self.frame(entry, last - (len(entries) - 1 - index) * SQUEEZE)
            if frame is not None:
                frames.append(frame)
        return frames

    def end(self) -> None:
        self.ended = True
        for track in list(self.subscribers):
            track.stop()
        self.subscribers.clear()
        self._order = ()


class StreamOut:
    """A hub stream's WebRTC side: one sink, a `TrackOut` per kind WebRTC carries."""

    def __init__(self, stream: Stream, latency: Samples | None = None) -> None:
        self.stream = stream
        self.latency = latency if latency is not None else Samples()
        self.tracks: dict[str, TrackOut] = {}
        self.sessions: set = set()  # subscriber sessions (async close(reason)): closed when the stream ends
        self._viewers = 0
        stream.add_sink(self)

    def track(self, kind: str) -> TrackOut | None:
        """The kind's output, made on first use; None when the stream has no such track for WebRTC."""
        out = self.tracks.get(kind)
        if out is None:
            stream = self.stream
            codec = webrtc_codec(kind, stream.video_codec if kind == VIDEO else stream.audio_codec,
                                 stream.video_config if kind == VIDEO else None)
            if codec is None:
                return None
            out = self.tracks[kind] = TrackOut(self, kind, codec)
            if kind == VIDEO and stream.video_config is not None:
                out.on_entry(stream.video_config)
        return out

    def missing(self) -> dict[str, str]:
        """The stream's tracks WebRTC cannot carry as they are, e.g. {"audio": "aac"}."""
        return {kind: codec for kind, codec in self.stream.tracks().items() if self.track(kind) is None}

    # -- the Sink protocol -----------------------------------------------------------------------

    def on_entry(self, entry: Entry) -> None:
        out = self.tracks.get(entry.unit.kind)
        if out is not None:
            out.on_entry(entry)

    def stream_ended(self, reason: str) -> None:
        for out in self.tracks.values():
            out.end()
        _outs.pop(self.stream, None)
        sessions, self.sessions = self.sessions, set()
        for session in sessions:
            asyncio.ensure_future(session.close("publisher_left"))

    @property
    def viewer_count(self) -> int:
        return self._viewers

    def viewers_changed(self) -> None:
        self._viewers = max((len(t.subscribers) for t in self.tracks.values()), default=0)
        self.stream.viewers_changed()


_outs: weakref.WeakKeyDictionary[Stream, StreamOut] = weakref.WeakKeyDictionary()


def stream_out(stream: Stream, latency: Samples | None = None) -> StreamOut:
    """The stream's WebRTC side, made with the first WebRTC viewer."""
    out = _outs.get(stream)
    if out is None:
        out = _outs[stream] = StreamOut(stream, latency)
    return out


class SubscriberTrack(MediaStreamTrack):
    """A subscriber's end of the fan-out. aiortc needs a track for the sender; its `recv` is never
    called (the sender runs as an `RtpOutput`, attached here once its transport is up)."""

    def __init__(self, source: TrackOut) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        self.output: RtpOutput | None = None
        self.need_keyframe = source.kind == VIDEO
        self.frames_sent = 0
        self.dropped = 0
        self._backlog: deque[Frame] | None = None
        self._pacer: asyncio.TimerHandle | None = None

    def attach(self, output: RtpOutput | None) -> None:
        self.output = output
        if output is None or self.kind != VIDEO:
            return
        self.need_keyframe = True
        if not self.source.stream.request_keyframe():
            self._start_from_gop()

    def _start_from_gop(self) -> None:
        frames = self.source.gop_frames()
        if not frames:
            return  # nothing cached yet: the next keyframe starts it
        self.need_keyframe = False
        self._backlog = deque(frames)
        self._drain()

    def _drain(self) -> None:
        self._pacer = None
        backlog, output = self._backlog, self.output
        if backlog is None or output is None or self.readyState != "live":
            self._backlog = None
            return
        sent = 0
        while backlog and sent < GOP_BURST_BYTES:
            frame = backlog.popleft()
            if not output.send(frame.payloads, frame.timestamp):
                self._lost()
                return
            sent += frame.size
            self.frames_sent += 1
        if backlog:
            self._pacer = asyncio.get_running_loop().call_later(GOP_BURST_TICK, self._drain)
        else:
            self._backlog = None

    def push(self, frame: Frame) -> None:
        output = self.output
        if output is None or self.readyState != "live":
            self.dropped += 1
            return
        if self._backlog is not None:
            self._backlog.append(frame)
            return
        if self.need_keyframe:
            if not frame.keyframe:
                self.dropped += 1
                return
            self.need_keyframe = False
        if output.send(frame.payloads, frame.timestamp):
            self.frames_sent += 1
            self.source.latency.add(time.monotonic() - frame.arrived)
            return
        self._lost()

    def _lost(self) -> None:
        """The frame went out partly or not at all: restart at a keyframe."""
        self.dropped += 1
        self._backlog = None
        if self.kind == VIDEO:
            self.need_keyframe = True
            self.source.request_keyframe()

    async def recv(self):
        while self.readyState == "live":
            await asyncio.sleep(1)
        raise MediaStreamError

    def request_keyframe(self) -> None:
        """The subscriber's PLI/FIR (routed here from its sender)."""
        if self.kind == VIDEO:
            self.source.request_keyframe()

    def stop(self) -> None:
        super().stop()
        if self._pacer is not None:
            self._pacer.cancel()
            self._pacer = None
        self._backlog = None
        self.output = None
