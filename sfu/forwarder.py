"""Fan-out of one published track to its subscribers, without decoding.

A `TrackForwarder` gets each reassembled encoded frame once (from the receiver hook), wraps it in
one `av.Packet` and appends it to every subscriber's bounded queue: a subscriber costs one append.
Each `SubscriberTrack` is read by its own `RTCRtpSender`, which only packetizes (`encoder.pack`),
so sequence numbers, SSRC, RTX history and SRTP stay per subscriber, as they must.

A subscriber starts at a keyframe. One that falls behind (its queue full: a stalled sender) is
emptied and waits for the next keyframe; the publisher and the other subscribers never wait.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from fractions import Fraction

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from .aiortc_hooks import make_packet
from .keyframe import is_keyframe
from .stats import Samples

VIDEO_QUEUE = 90  # frames: 3 s at 30 fps
AUDIO_QUEUE = 50  # 1 s of 20 ms Opus frames


class Frame:
    __slots__ = ("packet", "keyframe", "arrived", "size")

    def __init__(self, packet: av.Packet, keyframe: bool, arrived: float, size: int) -> None:
        self.packet = packet
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
        self.time_base = Fraction(1, codec.clockRate)
        self.subscribers: set[SubscriberTrack] = set()
        self.latency = latency if latency is not None else Samples()
        self.frames = 0
        self.bytes = 0
        self.dropped_after_loss = 0
        self.ended = False
        self._broken = False
        self._codec_name = codec.mimeType.split("/")[1]

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
        if not self.subscribers:
            return
        frame = Frame(make_packet(data, timestamp, self.time_base), keyframe, arrived, len(data))
        for subscriber in self.subscribers:
            subscriber.push(frame)

    def subscribe(self) -> SubscriberTrack:
        track = SubscriberTrack(self)
        self.subscribers.add(track)
        if self.kind == "video":
            self.request_keyframe()
        return track

    def unsubscribe(self, track: SubscriberTrack) -> None:
        self.subscribers.discard(track)
        track.stop()

    def end(self) -> None:
        self.ended = True
        for track in list(self.subscribers):
            track.stop()
        self.subscribers.clear()


class SubscriberTrack(MediaStreamTrack):
    """What a subscriber's sender reads: encoded packets from a bounded queue."""

    def __init__(self, source: TrackForwarder) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        self._queue: deque[Frame] = deque()
        self._max = VIDEO_QUEUE if source.kind == "video" else AUDIO_QUEUE
        self._waiter: asyncio.Future | None = None
        self.need_keyframe = source.kind == "video"
        self._sending: Frame | None = None
        self.frames_sent = 0
        self.dropped = 0

    def push(self, frame: Frame) -> None:
        if self.need_keyframe:
            if not frame.keyframe:
                self.dropped += 1
                return
            self.need_keyframe = False
        queue = self._queue
        if len(queue) >= self._max:
            self.dropped += len(queue)
            queue.clear()
            if self.kind == "video":
                self.source.request_keyframe()
                if not frame.keyframe:
                    self.need_keyframe = True
                    self.dropped += 1
                    return
        queue.append(frame)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def recv(self) -> av.Packet:
        sending = self._sending
        if sending is not None:  # the sender has sent it and comes back: that is when it left
            self.source.latency.add(time.monotonic() - sending.arrived)
            self._sending = None
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        frame = self._queue.popleft()
        self._sending = frame
        self.frames_sent += 1
        return frame.packet

    def request_keyframe(self) -> None:
        """The subscriber's PLI/FIR (routed here from its sender)."""
        if self.kind == "video":
            self.source.request_keyframe()

    def stop(self) -> None:
        super().stop()
        self._queue.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
