"""Fan-out of one published track to its subscribers, without decoding.

A `TrackForwarder` gets each reassembled encoded frame once (from the receiver hook), packetizes it
once and hands the payloads to every subscriber's `RtpOutput` (sfu/aiortc_hooks.py), synchronously:
each subscriber only adds its RTP headers (own SSRC, sequence numbers, RTX history), SRTP-protects
and sends the frame in one system call. No per-subscriber queue or task: the frame leaves for all
subscribers before the next packet from the publisher is read, and nothing waits in between.

A subscriber starts at a keyframe. One whose frame cannot go out whole (socket buffer full: a
stalled path) skips to the next keyframe; the publisher and the other subscribers never wait.
The order of subscribers rotates by one every frame, so none is always served last.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from .aiortc_hooks import Packetizer, RtpOutput
from .keyframe import is_keyframe
from .stats import Samples


class Frame:
    __slots__ = ("payloads", "timestamp", "keyframe", "arrived", "size")

    def __init__(self, payloads: list[bytes], timestamp: int, keyframe: bool, arrived: float, size: int) -> None:
        self.payloads = payloads
        self.timestamp = timestamp
        self.keyframe = keyframe
        self.arrived = arrived
        self.size = size


class TrackForwarder:
    """One per published track: frames in once, out to every subscriber."""

    def __init__(self, kind: str, codec: RTCRtpCodecParameters, request_keyframe: Callable[[], None],
                 latency: Samples | None = None) -> None:
        self.kind = kind
        self.codec = codec
        self.request_keyframe = request_keyframe
        self.subscribers: set[SubscriberTrack] = set()
        self.latency = latency if latency is not None else Samples()
        self.frames = 0
        self.bytes = 0
        self.dropped_after_loss = 0
        self.ended = False
        self._broken = False
        self._codec_name = codec.mimeType.split("/")[1]
        self._packetizer = Packetizer(codec)
        self._order: tuple[SubscriberTrack, ...] = ()

    def on_frame(self, data: bytes, timestamp: int, arrived: float, after_loss: bool) -> None:
        self.frames += 1
        self.bytes += len(data)
        keyframe = is_keyframe(self._codec_name, data) if self.kind == "video" else True
        if after_loss and self.kind == "video":
            self._broken = True
        if self._broken:
            if not keyframe:
                self.dropped_after_loss += 1
                self.request_keyframe()
                return
            self._broken = False
        order = self._order
        if not order:
            return
        payloads, rtp_timestamp = self._packetizer.pack(data, timestamp)
        frame = Frame(payloads, rtp_timestamp, keyframe, arrived, len(data))
        first = self.frames % len(order)
        for subscriber in order[first:]:
            subscriber.push(frame)
        for subscriber in order[:first]:
            subscriber.push(frame)

    def subscribe(self) -> SubscriberTrack:
        track = SubscriberTrack(self)
        self.subscribers.add(track)
        self._order = tuple(self.subscribers)
        if self.kind == "video":
            self.request_keyframe()
        return track

    def unsubscribe(self, track: SubscriberTrack) -> None:
        self.subscribers.discard(track)
        self._order = tuple(self.subscribers)
        track.stop()

    def end(self) -> None:
        self.ended = True
        for track in list(self.subscribers):
            track.stop()
        self.subscribers.clear()
        self._order = ()


class SubscriberTrack(MediaStreamTrack):
    """A subscriber's end of the fan-out. aiortc needs a track for the sender; its `recv` is never
    called (the sender runs as an `RtpOutput`, attached here once its transport is up)."""

    def __init__(self, source: TrackForwarder) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        self.output: RtpOutput | None = None
        self.need_keyframe = source.kind == "video"
        self.frames_sent = 0
        self.dropped = 0

    def attach(self, output: RtpOutput | None) -> None:
        self.output = output
        if output is not None and self.kind == "video":
            self.need_keyframe = True
            self.source.request_keyframe()

    def push(self, frame: Frame) -> None:
        output = self.output
        if output is None or self.readyState != "live":
            self.dropped += 1
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
        self.dropped += 1
        if self.kind == "video":  # the frame went out partly or not at all: restart at a keyframe
            self.need_keyframe = True
            self.source.request_keyframe()

    async def recv(self):
        while self.readyState == "live":
            await asyncio.sleep(1)
        raise MediaStreamError

    def request_keyframe(self) -> None:
        """The subscriber's PLI/FIR (routed here from its sender)."""
        if self.kind == "video":
            self.source.request_keyframe()

    def stop(self) -> None:
        super().stop()
        self.output = None
