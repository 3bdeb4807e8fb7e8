"""aiortc test clients: WHIP publisher, WHEP subscriber and room-call peers, loopback-only ICE."""
from __future__ import annotations

import array
import asyncio
import fractions
import math
import time
import urllib.request

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import AUDIO_PTIME, MediaStreamError, MediaStreamTrack

from sfu.aiortc_hooks import ice_restrict

ice_restrict(["127.0.0.1"])  # the clients gather a loopback candidate, never eth0


def peer_connection() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


class PatternVideo(MediaStreamTrack):
    """Generated video: a moving gradient, `fps` frames per second."""

    kind = "video"

    def __init__(self, width: int = 640, height: int = 360, fps: int = 30) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._count = 0
        self._start: float | None = None
        self._patterns = [self._pattern(shift) for shift in range(0, 256, 8)]

    def _pattern(self, shift: int) -> av.VideoFrame:
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for index, plane in enumerate(frame.planes):
            width = plane.line_size
            rows = plane.buffer_size // width
            if index == 0:
                row = bytes((x * 2 + shift) & 255 for x in range(width))
                plane.update(row * rows)
            else:
                plane.update(bytes([(shift + 64 * index) & 255]) * (width * rows))
        return frame

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._count / self.fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = self._patterns[self._count % len(self._patterns)]
        frame.pts = self._count * (90000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self._count += 1
        return frame


class ToneAudio(MediaStreamTrack):
    """A 440 Hz tone, 20 ms frames at 48 kHz."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._count = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        samples = int(AUDIO_PTIME * 48000)
        due = self._start + self._count * AUDIO_PTIME
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        start = self._count * samples
        data = array.array("h", (int(8000 * math.sin(2 * math.pi * 440 * (start + i) / 48000))
                                 for i in range(samples)))
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(data.tobytes())
        frame.sample_rate = 48000
        frame.pts = self._count * samples
        frame.time_base = fractions.Fraction(1, 48000)
        self._count += 1
        return frame


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def http_async(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    return await asyncio.get_running_loop().run_in_executor(None, http, method, url, body, headers)


async def whip_publish(base: str, public_id: str, stream_key: str, tracks: list[MediaStreamTrack],
                       video_codec: str | None = None):
    """Publish over WHIP; `video_codec` ("H264", "VP8") restricts the video offer to that codec."""
    pc = peer_connection()
    for track in tracks:
        transceiver = pc.addTransceiver(track, direction="sendonly")
        if video_codec and track.kind == "video":
            codecs = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences([c for c in codecs if c.mimeType in (f"video/{video_codec}", "video/rtx")])
    await pc.setLocalDescription(await pc.createOffer())
    status, headers, body = await http_async("POST", f"{base}/whip/{public_id}", pc.localDescription.sdp.encode(),
                                             {"Content-Type": "application/sdp",
                                              "Authorization": f"Bearer {stream_key}"})
    if status != 201:
        await pc.close()
        raise AssertionError(f"WHIP refused: {status} {body[:300]!r}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))
    return pc, base + headers["Location"]


class Collector:
    """Reads a remote track, counting decoded frames (and their times and sizes)."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self.frames: list[tuple[float, int, int]] = []  # (time, width, height) or (time, samples, rate)
        self.pts: list[int] = []  # of each frame: RTP time since the first one aiortc decoded
        self.first = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                now = time.monotonic()
                self.pts.append(frame.pts)
                if isinstance(frame, av.VideoFrame):
                    self.frames.append((now, frame.width, frame.height))
                else:
                    self.frames.append((now, frame.samples, frame.sample_rate))
                if not self.first.done():
                    self.first.set_result(now)
        except (MediaStreamError, asyncio.CancelledError):
            pass

    def missing(self, step: int, since: float = 0.0) -> int:
        """Frames missing from the timeline of the frames that arrived from `since` on: the span of
        their pts in `step`s (a frame's RTP spacing), plus one, less those decoded."""
        pts = [p for (t, *_), p in zip(self.frames, self.pts, strict=True) if t >= since]
        return round((pts[-1] - pts[0]) / step) + 1 - len(pts) if pts else 0

    def rate(self, since: float) -> float:
        times = [t for t, *_ in self.frames if t >= since]
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else 0.0


async def recv_offer(kinds=("audio", "video")) -> tuple[RTCPeerConnection, dict[str, asyncio.Future]]:
    pc = peer_connection()
    loop = asyncio.get_running_loop()
    collectors: dict[str, asyncio.Future] = {kind: loop.create_future() for kind in kinds}

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if not collectors[track.kind].done():
            collectors[track.kind].set_result(Collector(track))

    for kind in kinds:
        pc.addTransceiver(kind, direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, collectors


async def whep_subscribe(base: str, public_id: str, kinds=("audio", "video")):
    pc, collectors = await recv_offer(kinds)
    status, headers, body = await http_async("POST", f"{base}/whep/{public_id}", pc.localDescription.sdp.encode(),
                                             {"Content-Type": "application/sdp"})
    if status != 201:
        await pc.close()
        raise AssertionError(f"WHEP refused: {status} {body[:300]!r}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))
    return pc, base + headers["Location"], collectors


class SharedStart:
    """One start instant for several generated tracks: the first `recv()` of any of them fixes it,
    so frames of equal media time are due at the same monotonic time on every track."""

    def __init__(self) -> None:
        self.at: float | None = None

    def get(self) -> float:
        if self.at is None:
            self.at = time.monotonic()
        return self.at


class FlashVideo(MediaStreamTrack):
    """Black video, white on the frame at each whole second of the track's clock (frame n with
    n % fps == 0); `fps` frames a second paced on time.monotonic from `start`; pts in 90 kHz."""

    kind = "video"

    def __init__(self, start: SharedStart, width: int = 640, height: int = 360, fps: int = 30) -> None:
        super().__init__()
        self.start, self.width, self.height, self.fps = start, width, height, fps
        self._count = 0
        self._planes = {luma: self._planes_of(luma) for luma in (16, 235)}  # video-range black, white

    def _planes_of(self, luma: int) -> list[bytes]:
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        return [bytes([luma if index == 0 else 128]) * plane.buffer_size for index, plane in enumerate(frame.planes)]

    async def recv(self) -> av.VideoFrame:
        due = self.start.get() + self._count / self.fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for plane, data in zip(frame.planes, self._planes[235 if self._count % self.fps == 0 else 16], strict=True):
            plane.update(data)
        frame.pts = self._count * (90000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self._count += 1
        return frame


class BeepAudio(MediaStreamTrack):
    """Silence with a 1 kHz beep in the first `beep` seconds of each second of the track's clock:
    20 ms frames at 48 kHz paced from `start`, like ToneAudio. The beep's first sample (sample
    48000 * k) has the media time of FlashVideo's white frame k * fps, and both are due at start + k."""

    kind = "audio"

    def __init__(self, start: SharedStart, beep: float = 0.06, frequency: int = 1000, amplitude: int = 16000) -> None:
        super().__init__()
        self.start = start
        self._count = 0
        rate = 48000
        self._second = array.array("h", (int(amplitude * math.sin(2 * math.pi * frequency * i / rate))
                                         if i < beep * rate else 0 for i in range(rate)))

    async def recv(self) -> av.AudioFrame:
        samples = int(AUDIO_PTIME * 48000)
        due = self.start.get() + self._count * AUDIO_PTIME
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        first = (self._count * samples) % 48000  # 48000 / 960: a frame never straddles a second
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(self._second[first:first + samples].tobytes())
        frame.sample_rate = 48000
        frame.pts = self._count * samples
        frame.time_base = fractions.Fraction(1, 48000)
        self._count += 1
        return frame
