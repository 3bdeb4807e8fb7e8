"""Lip sync through each bridge: a source whose audio beeps on the frames where the picture flashes
(one white frame and the first sample of a 60 ms 1 kHz beep at every whole second), watched for
60 s the other way; the audio/video offset (beep - flash) stays within +-80 ms and is printed.
Real clients only: ffmpeg or aiortc publish, aiortc or PyAV watch."""
from __future__ import annotations

import array
import asyncio
import statistics
import subprocess
import threading
import time

import av
import pytest
from aiortc import RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from media.config import MediaConfig
from tests.sfu.clients import BeepAudio, FlashVideo, SharedStart, http_async, peer_connection, whip_publish
from tests.support.media import FPS, pyav_errors, wait_until
from tests.support.procs import require_tool

from .test_rtmp_ingest import room_status, rtmp_play_url, rtmp_publish_url, stop

pytestmark = pytest.mark.e2e

SECONDS = 60  # watched
WARMUP = 2.0  # s skipped at the start of each viewer: it joins mid-GOP, HLS starts on its request
TOLERANCE = 0.080  # s, either way
REPORTS_USED = 20  # RTCP sender reports a WebRTC player fits its RTP -> NTP mapping to
MIN_PAIRS = 50  # of ~58 flashes in the 60 s after warm-up
BRIGHT = 125  # mean luma above which a frame is the flash (black is 16, white 235)
LOUD = 0.2  # |sample| (full scale 1) from which the audio is the beep (0.8 at the RTMP source, 0.5 WHIP)
FRAME_GAP = 1.5 / FPS  # s: a picture's interval (at most 10 % longer from a WHIP publisher's clock), not two
QUIET_GAP = 0.5  # s without flash (beep) before a bright frame (loud sample) that starts a new one

# The RTMP source: black 640x360 at 30 fps with frame n % 30 == 0 white, and 44.1 kHz audio silent
# but for a 1 kHz beep in [k, k + 0.06) s; x264 with B-frames (as OBS sends), AAC, -re. Checked
# offline: in ffmpeg's own FLV file of this, beep - flash is within 1 ms.
FLASH_SOURCE = "color=c=black:s=640x360:r=30,drawbox=c=white:t=fill:enable='eq(mod(n,30),0)'"
BEEP_SOURCE = "aevalsrc='if(lt(mod(t,1),0.06),0.8*sin(2*PI*1000*t),0)':s=44100"


def hls_url(service, room) -> str:  # as in test_bridges (importing it would register its H.264 profiles)
    return f"http://127.0.0.1:{service.media_http_port}/hls/{room['room']['room_id']}.m3u8"


def ffmpeg_flash_beep(url: str) -> subprocess.Popen:
    return subprocess.Popen(
        [require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", FLASH_SOURCE, "-f", "lavfi", "-i", BEEP_SOURCE, "-t", str(SECONDS + 30),
         "-c:v", "libx264", "-preset", "veryfast", "-bf", "3", "-g", "60", "-keyint_min", "60", "-b:v", "800k",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-f", "flv", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# --- what a frame shows or sounds -------------------------------------------------------------

def mean_luma(frame: av.VideoFrame) -> float:
    data = bytes(frame.planes[0])[::7]  # a sample of the Y plane is plenty for black or white
    return sum(data) / len(data)


SAMPLE_FORMATS = {"s16": ("h", 32768.0), "s32": ("i", 2147483648.0), "flt": ("f", 1.0), "dbl": ("d", 1.0)}


def first_loud(frame: av.AudioFrame) -> int | None:
    """Index of the frame's first sample (first channel) at or above LOUD, or None."""
    name = frame.format.name
    code, scale = SAMPLE_FORMATS[name.rstrip("p")]
    channels = 1 if frame.format.is_planar else len(frame.layout.channels)
    samples = array.array(code)
    samples.frombytes(bytes(frame.planes[0])[:frame.samples * channels * samples.itemsize])
    threshold = LOUD * scale
    for index in range(frame.samples):
        if abs(samples[index * channels]) >= threshold:
            return index
    return None


# --- onsets and offsets -----------------------------------------------------------------------

def onsets(times: list[float], since: float) -> list[float]:
    """The first of each run of events (bright frames, loud samples) after QUIET_GAP without one;
    a run already under way at `since` is not an onset."""
    found, previous = [], None
    for t in sorted(times):
        if (previous is None or t - previous > QUIET_GAP) and t >= since:
            found.append(t)
        previous = t
    return found


def offsets(flashes: list[float], beeps: list[float]) -> list[float]:
    """beep - flash, in ms, for each flash and its nearest beep (when one is within QUIET_GAP)."""
    paired = []
    for flash in flashes:
        if beeps:
            beep = min(beeps, key=lambda b: abs(b - flash))
            if abs(beep - flash) < QUIET_GAP:
                paired.append((beep - flash) * 1000)
    return paired


def summary(label: str, values: list[float]) -> str:
    if not values:
        return f"{label}: no flash/beep pairs"
    return (f"{label}: {len(values)} pairs, beep - flash min {min(values):+.1f} / median "
            f"{statistics.median(values):+.1f} / max {max(values):+.1f} ms")


def measure(label: str, flashes: list[float], beeps: list[float], tolerance: float = TOLERANCE
            ) -> tuple[str, str | None]:
    """Print and return the offsets' summary, and what fails the bound (or None)."""
    values = offsets(flashes, beeps)
    line = summary(label, values)
    print(line)
    if len(values) < MIN_PAIRS:
        return line, f"{line}: fewer than {MIN_PAIRS} ({len(flashes)} flashes, {len(beeps)} beeps)"
    outside = [round(v, 1) for v in values if abs(v) > tolerance * 1000]
    return line, f"{line}; outside +-{tolerance * 1000:.0f} ms: {outside}" if outside else None


def missing(pts: list, step: float) -> int:
    """Frames missing from a timeline: the span of `pts` in `step`s, plus one, less those there."""
    return round((pts[-1] - pts[0]) / step) + 1 - len(pts) if pts else 0


def assert_within(results: list[tuple[str, str | None]]) -> None:
    failures = [failure for _, failure in results if failure]
    assert not failures, "\n".join(failures + [line for line, _ in results])


# --- Test 1: RTMP (H.264 with B-frames + AAC) -> WebRTC ---------------------------------------

class RtpTimeline:
    """A receiver's RTP as it reaches the socket, before aiortc's jitter buffer: the arrival
    (monotonic) of the last packet of each RTP timestamp, and each RTCP sender report of the
    media SSRC. (Reads aiortc's private timestamp mapper to turn decoded pts back into RTP time.)"""

    def __init__(self, receiver: RTCRtpReceiver, clock_rate: int) -> None:
        self.receiver, self.clock_rate = receiver, clock_rate
        self.arrivals: dict[int, float] = {}
        self.reports: list[tuple[float, float, int, int]] = []  # (arrival, NTP seconds, RTP time, SSRC)
        self.media_ssrc: int | None = None
        rtp, rtcp = receiver._handle_rtp_packet, receiver._handle_rtcp_packet

        async def handle_rtp(packet, arrival_time_ms: int) -> None:
            self.arrivals[packet.timestamp] = time.monotonic()  # an RTX packet keeps its original's
            if self.media_ssrc is None:
                self.media_ssrc = packet.ssrc  # the first packet is never a retransmission
            await rtp(packet, arrival_time_ms=arrival_time_ms)

        async def handle_rtcp(packet) -> None:
            info = getattr(packet, "sender_info", None)
            if info is not None:
                self.reports.append((time.monotonic(), info.ntp_timestamp / (1 << 32), info.rtp_timestamp,
                                     packet.ssrc))
            await rtcp(packet)

        receiver._handle_rtp_packet = handle_rtp  # type: ignore[method-assign]
        receiver._handle_rtcp_packet = handle_rtcp  # type: ignore[method-assign]

    def rtp_timestamp(self, pts: int) -> int:
        """aiortc gives decoded frames pts = RTP timestamp - the first one it decoded."""
        origin = self.receiver._RTCRtpReceiver__timestamp_mapper._origin  # type: ignore[attr-defined]
        return (pts + origin) & 0xFFFFFFFF

    def arrival(self, pts: int) -> float | None:
        return self.arrivals.get(self.rtp_timestamp(pts))

    def sender_time(self, pts: int, at: float) -> float | None:
        """The sender's clock (NTP s) for `pts` as a player sees it at `at`: RTP time mapped by each
        of the last REPORTS_USED sender reports received by then (libwebrtc's RtpToNtpEstimator
        fits its last 20 too), the median of those; None before 3 reports. Each report maps the RTP
        time last sent to its send instant, so one sent amid a burst is off (the first one, amid
        the join's catch-up, was seen 160 ms off): the median keeps that out."""
        reports = [r for r in self.reports if r[0] <= at and r[3] == self.media_ssrc][-REPORTS_USED:]
        if len(reports) < 3:
            return None
        rtp = self.rtp_timestamp(pts)
        mapped = []
        for _, ntp, reported, _ in reports:
            delta = (rtp - reported) & 0xFFFFFFFF
            delta -= (1 << 32) if delta >= 1 << 31 else 0
            mapped.append(ntp + delta / self.clock_rate)
        return statistics.median(mapped)


async def whep_watch(base: str, public_id: str, seconds: float):
    """A WHEP viewer decoding audio and video for `seconds` after its first picture. Returns
    {kind: (RtpTimeline, [(delivered, pts, luma) | (delivered, pts, samples, rate, first loud index)])}."""
    pc = peer_connection()
    for kind in ("audio", "video"):
        pc.addTransceiver(kind, direction="recvonly")
    timelines = {t.kind: RtpTimeline(t.receiver, 48000 if t.kind == "audio" else 90000) for t in pc.getTransceivers()}
    records: dict[str, list] = {"audio": [], "video": []}
    tasks = []
    first_picture = asyncio.get_running_loop().create_future()

    async def read(track) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if track.kind == "video":
                    records["video"].append((now, frame.pts, mean_luma(frame)))
                    if not first_picture.done():
                        first_picture.set_result(now)
                else:
                    records["audio"].append((now, frame.pts, frame.samples, frame.sample_rate, first_loud(frame)))
        except MediaStreamError:
            pass

    @pc.on("track")
    def on_track(track) -> None:
        tasks.append(asyncio.ensure_future(read(track)))

    try:
        await pc.setLocalDescription(await pc.createOffer())
        status, _, body = await http_async("POST", f"{base}/whep/{public_id}", pc.localDescription.sdp.encode(),
                                           {"Content-Type": "application/sdp"})
        assert status == 201, f"WHEP refused: {status} {body[:300]!r}"
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))
        await asyncio.wait_for(first_picture, 15)
        await asyncio.sleep(seconds)
    finally:
        for task in tasks:
            task.cancel()
        await pc.close()
    return {kind: (timelines[kind], records[kind]) for kind in ("audio", "video")}


@pytest.mark.timeout(150)
async def test_lip_sync_rtmp_to_webrtc(service, room):
    """OBS-style RTMP (H.264 with B-frames, AAC 44.1 kHz) watched over WebRTC by aiortc: both bridges
    at once (video re-encoded without B-frames, AAC -> Opus). The player's timeline here is arrival
    time: a WebRTC player aligns its tracks by the RTCP sender reports, which the server derives
    from its send times, so what arrives together plays together. Arrival is taken at the socket,
    before aiortc's jitter buffer (which hands an audio frame over only once 4 newer ones are in,
    a video frame once the next one starts: a client artefact, not the server's). Printed too and
    held to the same bound: the offset on the sender reports' clock itself (RTP time mapped through
    the reports, as a browser's A/V sync does), which is steadier than arrival."""
    publisher = ffmpeg_flash_beep(rtmp_publish_url(service, room))
    try:
        assert await asyncio.to_thread(wait_until, lambda: room_status(service, room) == "live", 15), \
            publisher.stderr.read().decode() if publisher.poll() is not None else service.log()
        with pyav_errors() as errors:  # aiortc decodes with FFmpeg, through PyAV
            watched = await whep_watch(service.url(""), room["room"]["room_id"], SECONDS + WARMUP)
    finally:
        stop(publisher)
    video_timeline, video = watched["video"]
    audio_timeline, audio = watched["audio"]
    assert video and audio, (len(video), len(audio))
    assert errors == [], errors[:20]
    # every picture (90 kHz, 3000 ticks apart) and every 20 ms Opus frame (960 samples) of the 60 s
    # measured (past the warm-up: a viewer joining as the stream starts gets its first pictures as
    # they were, then the re-encode's once the B-frames are seen, on a timeline that steps back
    # there), none missing from either timeline, and the 60 s covered but the last 200 ms (6
    # pictures, 10 Opus frames) still in flight at the end
    watched_from = video[0][0] + WARMUP
    video_pts = [pts for t, pts, _ in video if t >= watched_from]
    audio_pts = [pts for t, pts, *_ in audio if t >= watched_from]
    assert missing(video_pts, 3000) == 0 and len(video_pts) >= SECONDS * FPS - 6, \
        (missing(video_pts, 3000), len(video_pts))
    assert missing(audio_pts, 960) == 0 and len(audio_pts) >= SECONDS * 50 - 10, \
        (missing(audio_pts, 960), len(audio_pts))
    since = video[0][0] + WARMUP

    # A video frame is an instant, and so is the arrival of its last packet. An audio packet's RTP
    # timestamp is its first sample's, and the sender reports map RTP time to the instant it is
    # sent, so a player sounds a packet's first sample at (about) its arrival: the first loud
    # sample, `index` samples into its frame, sounds index / rate after the frame's arrival. (Taking
    # arrival as the end of the frame's samples, as a capturing sender would send it, would put
    # every beep 20 ms earlier than the player plays it.)
    flashes = [video_timeline.arrival(pts) for _, pts, luma in video if luma > BRIGHT]
    beeps = [(audio_timeline.arrival(pts), index / rate) for _, pts, _, rate, index in audio if index is not None]
    # Arrival also carries the server's merged reads (RTMP_MERGED_READ_MS, media/merged_read.py): a
    # publisher's bytes are read once that much of them is queued, so a beep and its flash can be
    # read one merge apart. The sender-report clock below, which players sync by, does not.
    merged = MediaConfig.from_env(service.env).rtmp_merged_read_ms / 1000
    results = [measure("RTMP -> WebRTC, arrival", onsets([t for t in flashes if t is not None], since),
                       onsets([t + after for t, after in beeps if t is not None], since), TOLERANCE + merged)]

    # On the sender reports' clock, which a browser's A/V sync uses: sample `index` of a frame is
    # RTP time pts + index (Opus RTP runs at 48 kHz).
    flash_sr = [video_timeline.sender_time(pts, t) for t, pts, luma in video if luma > BRIGHT]
    beep_sr = [audio_timeline.sender_time(pts + index * 48000 // rate, t)
               for t, pts, _, rate, index in audio if index is not None]
    flash_sr, beep_sr = [t for t in flash_sr if t is not None], [t for t in beep_sr if t is not None]
    since = min(flash_sr + beep_sr, default=0.0) + QUIET_GAP  # from the first frame mapped (3 reports in)
    results.append(measure("RTMP -> WebRTC, RTCP sender-report clock", onsets(flash_sr, since),
                           onsets(beep_sr, since)))
    assert_within(results)


# --- Test 2: WebRTC (VP8 + Opus) -> RTMP and HLS ----------------------------------------------

def read_media(url: str, seconds: float, stop_event: threading.Event) -> tuple[list, list, str]:
    """PyAV decodes `url` until `seconds` of video past its first frame (or `stop_event`):
    ([(time, luma)], [(time of the first loud sample, or None)], error). Times are the container's pts."""
    video, audio = [], []
    try:
        with av.open(url, timeout=(15, 10)) as container:
            first = None
            for frame in container.decode(video=0, audio=0):
                if frame.time is None:
                    continue
                if isinstance(frame, av.VideoFrame):
                    first = frame.time if first is None else first
                    video.append((frame.time, mean_luma(frame)))
                    if frame.time - first >= seconds or stop_event.is_set():
                        break
                else:
                    index = first_loud(frame)
                    audio.append(None if index is None else frame.time + index / frame.sample_rate)
    except Exception as error:  # reported with what was read so far
        return video, audio, repr(error)
    return video, audio, ""


@pytest.mark.timeout(150)
async def test_lip_sync_webrtc_to_rtmp_and_hls(service, room):
    """A WHIP publisher (VP8 + Opus, both tracks from one start instant) read at once over RTMP
    and HLS by PyAV: both bridges (VP8 -> H.264, Opus -> AAC). The offset is on the container's
    timeline (pts): a player plays what the timestamps say, whenever it arrives."""
    start = SharedStart()
    pc, resource = await whip_publish(service.url(""), room["room"]["room_id"], room["stream_key"],
                                      [FlashVideo(start), BeepAudio(start)], video_codec="VP8")
    stop_event = threading.Event()
    try:
        assert await asyncio.to_thread(wait_until, lambda: room_status(service, room) == "live", 10)
        urls = {"RTMP": rtmp_play_url(service, room), "HLS": hls_url(service, room)}
        with pyav_errors() as errors:
            readings = await asyncio.gather(*(asyncio.to_thread(read_media, url, SECONDS + WARMUP, stop_event)
                                              for url in urls.values()))
    finally:
        stop_event.set()
        await http_async("DELETE", resource)
        await pc.close()
    assert errors == [], errors[:20]
    results = []
    for label, (video, audio, error) in zip(urls, readings, strict=True):
        assert video, f"{label}: no video decoded ({error})"
        # 62 s of pictures from the first one decoded, none missing: the 30 fps timeline (the
        # publisher clock stretches a step by 10 % at most) has no gap and holds every picture
        times = [t for t, _ in video]
        gap = max(b - a for a, b in zip(times, times[1:], strict=False))
        assert not error and gap <= FRAME_GAP and abs(missing(times, 1 / FPS)) <= 1, \
            (label, error, gap, missing(times, 1 / FPS), len(video))
        # and the AAC made from the Opus (1024 samples at 48 kHz) over the same time, up to 5 frames
        # (107 ms) either way for the audio interleaved before the first picture and after the last
        assert abs(len(audio) - (times[-1] - times[0]) * 48000 / 1024) <= 5, (label, len(audio), times[-1] - times[0])
        since = video[0][0] + WARMUP
        line, failure = measure(f"WebRTC -> {label}, pts", onsets([t for t, luma in video if luma > BRIGHT], since),
                                onsets([t for t in audio if t is not None], since))
        results.append((line, failure and f"{failure} (reader: {error or 'ok'})"))
    assert_within(results)
