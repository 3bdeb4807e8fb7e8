"""One media plane: an OBS-style RTMP stream plays over WebRTC, a WHIP stream plays over RTMP,
HTTP-FLV and HLS. Real clients on both sides: ffmpeg pushes and reads, aiortc publishes and plays."""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from sfu.aiortc_hooks import h264_profiles_register
from tests.sfu.clients import PatternVideo, ToneAudio, http_async, whep_subscribe, whip_publish
from tests.support.hls import media_playlist
from tests.support.media import (
    FPS,
    FRAME_GAP,
    assert_live,
    decode_errors,
    ffmpeg_decode,
    ffmpeg_publish,
    ffprobe_streams,
    live_frames,
    pyav_errors,
    wait_until,
)
from tests.support.procs import require_tool

from .test_rtmp_ingest import flv_url, room_status, rtmp_play_url, rtmp_publish_url, stop

pytestmark = pytest.mark.e2e

# The aiortc viewer offers Main and High too (as a WebRTC stack with those decoders would), so the
# answer can carry the stream's real profile; Chromium's offer has no High (see the browser test).
h264_profiles_register()

OPUS_RATE = 48000 / 1024  # AAC frames a second made from the WHIP publisher's Opus (48 kHz)


def hls_url(service, room) -> str:
    return f"http://127.0.0.1:{service.media_http_port}/hls/{room['room']['room_id']}.m3u8"


def decode_video(url: str, seconds: float, timeout: float = 40.0) -> tuple[list[int], str]:
    """Decode `seconds` of the video track: (pts in ms of every decoded frame, ffmpeg's stderr)."""
    result = subprocess.run(
        [require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-i", url, "-t", str(seconds),
         "-map", "0:v", "-f", "framemd5", "-"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout)
    pts = []
    time_base = 1 / 1000
    for line in result.stdout.splitlines():
        if line.startswith("#tb 0:"):
            num, den = line.split(":", 1)[1].strip().split("/")
            time_base = int(num) / int(den)
        if line.startswith("#") or "," not in line:
            continue
        pts.append(round(int(line.split(",")[2]) * time_base * 1000))
    return pts, result.stderr


@pytest.mark.parametrize("bframes", [None, 3], ids=["no-b-frames", "b-frames"])
async def test_an_rtmp_stream_plays_over_webrtc_in_an_aiortc_viewer(service, room, bframes):
    """OBS -> WebRTC: H.264 passthrough (the SDP carries the SPS's profile) or, with B-frames,
    re-encoded once for the stream without them (Constrained Baseline); the picture starts at once
    from the GOP cache; the AAC audio arrives as Opus (converted once per stream while viewers listen)."""
    publisher = ffmpeg_publish(rtmp_publish_url(service, room), gop=60, bframes=bframes)  # a 2 s GOP, as OBS
    pcs = []
    try:
        assert wait_until(lambda: room_status(service, room) == "live", 15)
        await asyncio.sleep(1.5)  # mid-GOP: a viewer waiting for the next keyframe would wait ~0.5 s
        public_id = room["room"]["room_id"]
        started = time.monotonic()
        with pyav_errors() as errors:  # aiortc decodes with FFmpeg, through PyAV
            pc, resource, collectors = await whep_subscribe(service.url(""), public_id, kinds=("audio", "video"))
            pcs.append(pc)
            video = await asyncio.wait_for(collectors["video"], 10)
            first = await asyncio.wait_for(video.first, 10)
            audio = await asyncio.wait_for(collectors["audio"], 10)
            first_audio = await asyncio.wait_for(audio.first, 10)
            await asyncio.sleep(5)
        assert errors == [], errors
        assert first - started < 1.0, f"first picture after {first - started:.2f} s"
        assert {(w, h) for _, w, h in video.frames} == {(640, 360)}
        rate = video.rate(first + 1)
        assert rate >= 28, f"decoded {rate:.1f} fps of 30"
        # every picture and every 20 ms Opus frame of the live part, none missing from the timeline
        # (90 kHz RTP time, a picture each 3000 ticks; 48 kHz, 960 samples a frame). The GOP cache's
        # pictures come first in a burst, stamped 1 ms apart so the player shows them at once: the
        # timeline is counted from 1 s after the first picture, past them.
        live, live_audio = first + 1, first_audio + 1
        shown = len([t for t, *_ in video.frames if t >= live])
        assert video.missing(3000, since=live) == 0 and shown >= 4 * FPS - 6, (video.missing(3000, since=live), shown)
        assert audio.missing(960, since=live_audio) == 0, audio.missing(960, since=live_audio)
        audio_rate = audio.rate(first_audio + 1)
        assert audio_rate >= 45, f"decoded {audio_rate:.1f} audio frames/s of 50"
        assert {rate for _, _, rate in audio.frames} == {48000}
        # profile-level-id in the answer is the stream's own (x264: High, level from the SPS)
        answer = pc.remoteDescription.sdp
        profiles = set(re.findall(r"profile-level-id=([0-9a-fA-F]{6})", answer))
        assert len(profiles) == 1 and profiles.pop().lower().startswith("64" if bframes is None else "42"), answer
        if bframes:  # the room's API says the video is re-encoded, why, and how to avoid it
            notes = " ".join(media_of(service, room).get("notes", []))
            assert "B-frames" in notes and "bframes=0" in notes, notes
            transcodes = media_of(service, room)["transcodes"]
            assert ("WebRTC", "video", "h264", "h264") in [(t["for"], t["kind"], t["from"], t["to"])
                                                         for t in transcodes], transcodes
        assert "opus/48000" in answer.lower()
        status, headers, _ = await http_async("DELETE", resource)
        assert status == 200
    finally:
        for pc in pcs:
            await pc.close()
        stop(publisher)


async def test_the_whep_answer_and_the_api_say_what_does_not_play_as_published(service, room):
    """A viewer whose offer lacks the stream's High profile is told it got it labelled 42e01f; the
    room's API detail lists the codecs and what is converted for which way of watching."""
    from aiortc import RTCRtpSender

    from tests.sfu.clients import peer_connection

    publisher = ffmpeg_publish(rtmp_publish_url(service, room))
    try:
        assert wait_until(lambda: room_status(service, room) == "live", 15)
        pc = peer_connection()
        transceiver = pc.addTransceiver("video", direction="recvonly")
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                         if c.parameters.get("profile-level-id") == "42e01f"])
        await pc.setLocalDescription(await pc.createOffer())
        status, headers, body = await http_async(
            "POST", service.url(f"/whep/{room['room']['room_id']}"), pc.localDescription.sdp.encode(),
            {"Content-Type": "application/sdp"})
        await pc.close()
        assert status == 201, body
        assert "labelled 42e01f" in headers["X-Stream-Notes"], headers

        def media():
            return json.loads(service.get(f"/api/v1/live/{room['room']['room_id']}")[1])["data"].get("media")

        # the node describes the stream once a second: wait for a description made once its tracks were known
        assert await asyncio.to_thread(wait_until, lambda: (media() or {}).get("tracks"), 5)
        described = media()
        assert (described["publisher"], described["tracks"]) == ("rtmp", {"video": "h264", "audio": "aac"})
        assert described["notes"] == [
            "audio aac is converted to opus for WebRTC viewers, once for the stream while they watch"]
    finally:
        stop(publisher)
    whip, resource = await whip_publish(service.url(""), room["room"]["room_id"], room["stream_key"],
                                        [PatternVideo(320, 180, 30)], video_codec="VP8")
    try:
        assert await asyncio.to_thread(
            wait_until, lambda: (media() or {}).get("publisher") == "webrtc", 10)
        described = media()
        assert described["tracks"] == {"video": "vp8"}
        assert "video vp8 is converted to h264 for HLS/HTTP-FLV/RTMP viewers, once for the stream while they watch" in \
            described["notes"], described
    finally:
        await http_async("DELETE", resource)
        await whip.close()


async def _whip_live(service, room, video_codec: str):
    pc, resource = await whip_publish(service.url(""), room["room"]["room_id"], room["stream_key"],
                                      [PatternVideo(640, 360, 30), ToneAudio()], video_codec=video_codec)
    assert await asyncio.to_thread(wait_until, lambda: room_status(service, room) == "live", 10)
    return pc, resource


def server_cpu_seconds(service) -> float:
    """The service process's user + system CPU time (/proc), for the figures a test prints."""
    fields = open(f"/proc/{service.proc.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def media_of(service, room) -> dict:
    return json.loads(service.get(f"/api/v1/live/{room['room']['room_id']}")[1])["data"].get("media") or {}


@pytest.mark.parametrize("video_codec", ["H264", "VP8"])
async def test_a_whip_stream_plays_over_rtmp_flv_and_hls_as_h264_and_aac(service, room, video_codec):
    """Browser-style publisher (H.264 or VP8, Opus) -> every protocol: H.264 + AAC of the published
    size and rate, timestamps from 0 and increasing, no decode error. Opus becomes AAC once for the
    stream; VP8 becomes H.264 once for the stream; H.264 passes with no video transcode."""
    def video_transcodes_started() -> int:
        return json.loads(service.get("/api/v1/rtc/stats")[1])["data"]["transcodes"].get("video_started", 0)

    started_before = video_transcodes_started()
    pc, resource = await _whip_live(service, room, video_codec)
    try:
        await asyncio.sleep(1.0)
        cpu_before, wall_before = server_cpu_seconds(service), time.monotonic()
        for url in (rtmp_play_url(service, room), flv_url(service, room), hls_url(service, room)):
            streams = await asyncio.to_thread(ffprobe_streams, url)
            assert (streams["video"]["codec_name"], streams["video"]["width"], streams["video"]["height"]) == \
                ("h264", 640, 360), url
            assert (streams["audio"]["codec_name"], streams["audio"]["sample_rate"], streams["audio"]["channels"]) \
                == ("aac", "48000", 2), url
            pts, stderr = await asyncio.to_thread(decode_video, url, 4)
            assert decode_errors(stderr) == [], stderr
            gaps = sorted(b - a for a, b in zip(pts, pts[1:], strict=False))[-8:]
            # 4 s from the keyframe the viewer joined at, none lost; 2 more either way than an RTMP
            # source's 1: the publisher clock may stretch or squeeze steps by up to 10 %
            low, high = live_frames(4, start=pts[0] / 1000, slack=2)
            assert low <= len(pts) <= high and gaps[-1] <= FRAME_GAP * 1000, \
                f"{len(pts)} frames in 4 s from {url}, largest gaps {gaps}, " \
                f"gaps at {[(a, b) for a, b in zip(pts, pts[1:], strict=False) if b - a > FRAME_GAP * 1000]}"
            assert pts == sorted(pts), pts[:5]
            assert url.endswith(".m3u8") or pts[0] < 500, pts[:5]  # a player's timeline starts near 0
            rate = (len(pts) - 1) / ((pts[-1] - pts[0]) / 1000)
            assert 28 <= rate <= 32, f"{rate:.1f} fps from {url}"
            decoded = await asyncio.to_thread(ffmpeg_decode, url, seconds=4)
            assert_live(decoded, 4, audio_rate=OPUS_RATE, slack=2, starts_near_zero=not url.endswith(".m3u8"),
                        what=url)
        share = (server_cpu_seconds(service) - cpu_before) / (time.monotonic() - wall_before)
        print(f"server CPU while three players read a WHIP {video_codec} stream: {100 * share:.1f} % of a core")
        transcodes = {t["kind"]: (t["from"], t["to"]) for t in media_of(service, room)["transcodes"]}
        expected = {"audio": ("opus", "aac")} | ({"video": ("vp8", "h264")} if video_codec == "VP8" else {})
        assert transcodes == expected  # H.264 published: no video transcode
        # the node's counter: one video transcode for the VP8 stream (shared by the three ways), none for H.264
        assert video_transcodes_started() - started_before == (1 if video_codec == "VP8" else 0)
    finally:
        await http_async("DELETE", resource)
        await pc.close()


def playlist(service, room) -> str:
    return media_playlist(hls_url(service, room))


def _segments(service, room) -> int:
    return playlist(service, room).count("#EXTINF")


async def test_a_whip_streams_hls_segments_stay_near_the_fragment_length(service, room):
    """The WebRTC source asks for a keyframe at every HLS fragment: segments near HLS_FRAGMENT (2 s)
    even though a WebRTC encoder sends keyframes only when asked."""
    pc, resource = await whip_publish(service.url(""), room["room"]["room_id"], room["stream_key"],
                                      [PatternVideo(640, 360, 30)], video_codec="H264")
    try:
        assert await asyncio.to_thread(wait_until, lambda: _segments(service, room) >= 3, 20)
        durations = [float(x) for x in re.findall(r"#EXTINF:([0-9.]+)", playlist(service, room))]
        assert all(1.5 <= d <= 3.5 for d in durations[1:]), durations
    finally:
        await http_async("DELETE", resource)
        await pc.close()


def lossy(pc, rate: float, seed: int = 5) -> dict:
    """Drop `rate` of the publisher's outgoing RTP packets (RTCP kept), like a lossy uplink."""
    rng = random.Random(seed)
    counts = {"sent": 0, "dropped": 0}
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        if getattr(dtls, "_lossy", False):
            continue
        original = dtls._send_rtp

        async def send_rtp(data: bytes, original=original) -> None:
            counts["sent"] += 1
            if rng.random() < rate:
                counts["dropped"] += 1
                return
            await original(data)

        dtls._send_rtp = send_rtp
        dtls._lossy = True
    return counts


async def test_five_percent_loss_gives_frame_gaps_never_a_broken_or_stalled_output(service, room):
    pc, resource = await whip_publish(service.url(""), room["room"]["room_id"], room["stream_key"],
                                      [PatternVideo(640, 360, 30)], video_codec="H264")
    try:
        assert await asyncio.to_thread(wait_until, lambda: room_status(service, room) == "live", 10)
        counts = lossy(pc, 0.05)
        await asyncio.sleep(1)
        pts, stderr = await asyncio.to_thread(decode_video, flv_url(service, room), 8)
        assert counts["dropped"] > 20, counts
        assert decode_errors(stderr) == [], f"a broken frame reached the FLV output: {stderr}"
        assert pts == sorted(pts), "timestamps went backwards"
        assert len(pts) >= 120 and pts[-1] - pts[0] >= 7000, (len(pts), pts[-1] - pts[0])  # never stalled
        gaps = [b - a for a, b in zip(pts, pts[1:], strict=False)]
        assert max(gaps) < 2500, f"a stall of {max(gaps)} ms"
        before = _segments(service, room)
        assert await asyncio.to_thread(wait_until, lambda: _segments(service, room) > before, 8), \
            "HLS stopped cutting segments"
        status, body = service.get(f"/api/v1/live/{room['room']['room_id']}")
        assert json.loads(body)["data"]["status"] == "live"
    finally:
        await http_async("DELETE", resource)
        await pc.close()


@pytest.mark.parametrize("video_codec", ["H264", "VP8"])
@pytest.mark.parametrize("player", ["flv", "hls"])
async def test_a_whip_stream_plays_in_chromium_with_mpegts_js_and_hls_js(service, room, player, video_codec):
    """A browser-style publisher (H.264 or VP8, Opus) watched the other way: mpegts.js (HTTP-FLV)
    and hls.js (HLS) play its H.264 + AAC (converted once for the stream where needed), with sound."""
    from tests.support.browser import chromium

    pc, resource = await _whip_live(service, room, video_codec)

    def watch() -> tuple[float, list, list, int]:
        with chromium() as browser:
            browser.get(service.url(f"/live/{room['room']['room_id']}?player={player}"))
            video_time = "return document.getElementById('video').currentTime"
            assert wait_until(lambda: browser.execute_script(video_time) > 0.2, 30), browser.get_log("browser")
            start = browser.execute_script(video_time)
            time.sleep(5.5)
            size = browser.execute_script("const v = document.getElementById('video');"
                                          "return [v.videoWidth, v.videoHeight]")
            errors = browser.execute_script("return window.playerErrors")
            audio = browser.execute_script("return document.getElementById('video').webkitAudioDecodedByteCount")
            return browser.execute_script(video_time) - start, errors, size, audio

    try:
        advanced, errors, size, audio = await asyncio.to_thread(watch)
    finally:
        await http_async("DELETE", resource)
        await pc.close()
    assert advanced >= 4.5 and errors == [] and size == [640, 360], (advanced, errors, size)
    assert audio > 0, "the AAC made from the publisher's Opus decodes"


async def test_staff_end_drops_a_whip_publisher_and_its_viewers_on_every_protocol(service, room, streamer_token):
    """The registry's staff drop reaches a WebRTC publisher like an RTMP one; its FLV viewer ends."""
    from tests.sfu.clients import recv_offer
    from tests.support.api import api

    pc, resource = await whip_publish(service.url(""), room["room"]["room_id"], room["stream_key"],
                                      [PatternVideo(640, 360, 30)], video_codec="H264")
    try:
        assert await asyncio.to_thread(wait_until, lambda: room_status(service, room) == "live", 10)
        viewer = await asyncio.to_thread(urllib.request.urlopen, flv_url(service, room), None, 10)
        assert await asyncio.to_thread(viewer.read, 1000)
        status, body = await asyncio.to_thread(api, service, f"/api/v1/live/{room['room']['room_id']}/end", {},
                                               streamer_token)
        assert status == 200 and body["data"]["was_live"]
        ended = time.monotonic()

        def drain() -> None:
            while viewer.read(65536):
                pass

        await asyncio.wait_for(asyncio.to_thread(drain), 5)  # the FLV response ends (chunked end)
        assert time.monotonic() - ended < 3
        assert await asyncio.to_thread(
            wait_until, lambda: pc.connectionState in ("closed", "failed") or json.loads(
                service.get("/api/v1/rtc/stats")[1])["data"]["publishers"] == 0, 5)
        offer_pc, _ = await recv_offer(("video",))
        status, _, body = await http_async("POST", service.url(f"/whep/{room['room']['room_id']}"),
                                           offer_pc.localDescription.sdp.encode(), {"Content-Type": "application/sdp"})
        await offer_pc.close()
        assert status == 404 and json.loads(body)["code"] == "not_live"
    finally:
        await http_async("DELETE", resource)
        await pc.close()
