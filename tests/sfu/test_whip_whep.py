"""An aiortc client publishes over WHIP; aiortc clients watch over WHEP and decode it."""
from __future__ import annotations

import asyncio
import json
import time

from tests.support.media import pyav_errors

from .clients import PatternVideo, ToneAudio, http, http_async, whep_subscribe, whip_publish


def stats(service) -> dict:
    return json.loads(service.get("/api/v1/rtc/stats")[1])["data"]


async def test_publish_whip_watch_whep(service, room):
    public_id, key = room["room"]["room_id"], room["stream_key"]
    base = service.url("")
    publisher, resource = await whip_publish(base, public_id, key, [PatternVideo(640, 360, 30), ToneAudio()])
    viewers = []
    try:
        sent = time.monotonic()
        with pyav_errors() as errors:  # aiortc decodes with FFmpeg, through PyAV
            pc, view_resource, collectors = await whep_subscribe(base, public_id)
            viewers.append(pc)
            video = await asyncio.wait_for(collectors["video"], 10)
            audio = await asyncio.wait_for(collectors["audio"], 10)
            first = await asyncio.wait_for(video.first, 10)
            join = first - sent
            await asyncio.sleep(4)
        assert errors == [], errors
        assert {(w, h) for _, w, h in video.frames} == {(640, 360)}
        rate = video.rate(first + 1)
        assert rate > 24, f"decoded {rate:.1f} fps of 30"
        # the SFU forwards the publisher's RTP time (3000 ticks a picture, 960 samples a 20 ms Opus
        # frame): every frame from the first on, none missing, for the 4 s watched, less the last
        # 200 ms still in flight
        assert video.missing(3000) == 0 and len(video.frames) >= 4 * 30 - 6, (video.missing(3000), len(video.frames))
        assert audio.missing(960) == 0 and len(audio.frames) >= 4 * 50 - 10, (audio.missing(960), len(audio.frames))
        assert join < 1.5, f"join took {join:.2f}s"
        status, body = service.get(f"/api/v1/live/{public_id}")
        assert json.loads(body)["data"]["status"] == "live"
        # a second viewer joins mid-stream and gets pictures too
        pc2, resource2, collectors2 = await whep_subscribe(base, public_id, kinds=("video",))
        viewers.append(pc2)
        second = await asyncio.wait_for(collectors2["video"], 10)
        await asyncio.wait_for(second.first, 5)
        status, _, _ = await http_async("DELETE", resource2)
        assert status == 200
    finally:
        for pc in viewers:
            await pc.close()
        status, _, _ = await http_async("DELETE", resource)
        await publisher.close()
    assert status == 200
    for _ in range(50):
        status, body = service.get(f"/api/v1/live/{public_id}")
        if json.loads(body)["data"]["status"] != "live":
            break
        await asyncio.sleep(0.1)
    assert json.loads(body)["data"]["status"] != "live", "the live session ends with the WHIP publisher"


def test_whip_refusals(service, room):
    public_id, key = room["room"]["room_id"], room["stream_key"]
    url = service.url(f"/whip/{public_id}")
    offer = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
             "c=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
             "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\na=rtcp-mux\r\n"
             "a=rtpmap:96 VP9/90000\r\n")
    sdp = {"Content-Type": "application/sdp"}
    status, headers, body = http("OPTIONS", url)
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "*"
    assert "application/sdp" in headers["Accept-Post"]
    status, headers, body = http("POST", url, b"hello", {**sdp, "Authorization": f"Bearer {key}"})
    assert status == 400 and json.loads(body)["code"] == "bad_sdp"
    status, _, body = http("POST", url, offer.encode(), {**sdp, "Authorization": f"Bearer {key}"})
    assert status == 400 and json.loads(body)["code"] == "no_usable_codec", body
    vp8 = offer.replace("VP9", "VP8")
    status, headers, body = http("POST", url, vp8.encode(), sdp)
    assert status == 401 and "Bearer" in headers["WWW-Authenticate"]
    status, _, body = http("POST", url, vp8.encode(), {**sdp, "Authorization": "Bearer not-a-key"})
    assert status == 401 and json.loads(body)["code"] == "bad_key"
    assert key not in body.decode()
    status, _, body = http("POST", url, vp8.encode(), {"Content-Type": "text/plain", "Authorization": f"Bearer {key}"})
    assert status == 415
    status, _, body = http("POST", service.url(f"/whep/{public_id}"), vp8.replace("sendonly", "recvonly").encode(), sdp)
    assert status == 404 and json.loads(body)["code"] == "not_live"
    status, _, _ = http("DELETE", service.url(f"/whip/{public_id}/nosuchsession"))
    assert status == 404
    status, _, body = http("GET", service.url("/api/v1/rtc/ice-servers"))
    assert status == 200 and json.loads(body)["data"]["iceServers"] == []


async def test_h264_is_forwarded_to_a_whep_viewer(service, room):
    """The subscriber's answer carries the publisher's codec: H.264 in, H.264 out, no transcode."""
    public_id, key = room["room"]["room_id"], room["stream_key"]
    base = service.url("")
    publisher, resource = await whip_publish(base, public_id, key, [PatternVideo(640, 360, 30)], video_codec="H264")
    try:
        pc, view_resource, collectors = await whep_subscribe(base, public_id, kinds=("video",))
        try:
            with pyav_errors() as errors:
                video = await asyncio.wait_for(collectors["video"], 10)
                first = await asyncio.wait_for(video.first, 10)
                await asyncio.sleep(3)
            assert errors == [], errors
            assert "H264" in pc.remoteDescription.sdp and "VP8" not in pc.remoteDescription.sdp
            assert {(w, h) for _, w, h in video.frames} == {(640, 360)}
            assert video.rate(first + 1) > 20
            # every picture from the first on (3000 ticks apart) for the 3 s watched, less the last
            # 200 ms still in flight
            assert video.missing(3000) == 0 and len(video.frames) >= 3 * 30 - 6, \
                (video.missing(3000), len(video.frames))
        finally:
            await pc.close()
    finally:
        await http_async("DELETE", resource)
        await publisher.close()
