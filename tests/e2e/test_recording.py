"""A recording room's live session becomes a playable MP4: ffmpeg pushes 20 s over RTMP (or aiortc
publishes over WHIP); the media node writes fragmented MP4 while live; on the session's end the
control plane's task (a real Celery worker when the suite runs on Redis, eagerly on the embedded
default) makes a faststart MP4 and a thumbnail, and the API lists it with a link that seeks."""
from __future__ import annotations

import asyncio
import json
import math
import subprocess
import urllib.request

import pytest

from tests.sfu.clients import PatternVideo, ToneAudio, http_async, whip_publish
from tests.support.api import api, staff_token
from tests.support.media import (
    FPS,
    assert_clean,
    assert_no_decode_errors,
    ffmpeg_decode,
    ffmpeg_publish,
    live_frames,
    wait_until,
)
from tests.support.procs import require_tool

from .test_rtmp_ingest import room_status, rtmp_publish_url


def recordings(service, room, token) -> list[dict]:
    status, body = api(service, f"/api/v1/live/{room['room']['room_id']}/recordings", token=token)
    assert status == 200, body
    return body["data"]


def record_on(service, room, token) -> None:
    status, body = api(service, f"/api/v1/live/{room['room']['room_id']}", {"recording": True}, token, method="PATCH")
    assert status == 200 and body["data"]["recording"] is True, body


def ready(service, room, token, timeout: float = 60) -> dict:
    assert wait_until(lambda: [r for r in recordings(service, room, token) if r["status"] in ("ready", "failed")],
                      timeout, interval=0.5), (recordings(service, room, token), service.log()[-4000:],
                                               service.worker_log()[-2000:])
    [recording] = recordings(service, room, token)
    assert recording["status"] == "ready", (recording, service.log()[-3000:], service.worker_log()[-2000:])
    return recording


def probe(url: str) -> dict:
    out = subprocess.run([require_tool("ffprobe"), "-v", "error", "-count_frames", "-show_format", "-show_streams",
                          "-of", "json", url], capture_output=True, text=True, timeout=60)
    assert_no_decode_errors(out, url)
    return json.loads(out.stdout)


def fetch(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as response:
        return response.status, dict(response.headers), response.read()


def check_playable(recording: dict, seconds: float, size: tuple[int, int], *, sent: int | None = None) -> dict:
    """The recording decodes cleanly with every picture: the `sent` ones when the publisher's count
    is known, else those of the `seconds` it lasts; and no gap between two pictures (a WebRTC
    source's timeline is the publisher clock's, which stretches a step by at most 10 %: 37 ms)."""
    url = recording["url"]
    found = probe(url)
    streams = {s["codec_type"]: s for s in found["streams"]}
    assert (streams["video"]["codec_name"], streams["video"]["width"], streams["video"]["height"]) == ("h264", *size)
    assert streams["audio"]["codec_name"] == "aac"
    duration = float(found["format"]["duration"])
    assert abs(duration - seconds) <= 1.0, duration
    # The file lasts until the later of its two tracks' ends: the audio may run on up to 3 pictures
    # (100 ms) past the last one, never before it. Its AAC frames (1024 samples) fill the same time
    # but where each track starts and ends: 5 frames (107 ms at 48 kHz) either way, as a WHIP
    # source's AAC (made from its Opus) was measured starting or ending 86 ms short of its pictures.
    video = sent if sent is not None else (math.floor(seconds * FPS) - 3, math.ceil(seconds * FPS))
    audio = live_frames(seconds, int(streams["audio"]["sample_rate"]) / 1024, slack=5)
    decoded = ffmpeg_decode(url, seconds=None, timeout=60)
    assert_clean(decoded, video=video, audio=audio, max_gap=1.5 / FPS, what=recording)
    status, _, body = fetch(url)
    assert body.index(b"moov") < body.index(b"mdat"), "faststart: the index comes first"
    status, headers, part = fetch(url, {"Range": "bytes=1000-1999"})
    assert status == 206 and part == body[1000:2000] and headers["Content-Range"] == f"bytes 1000-1999/{len(body)}"
    thumb = {s["codec_type"]: s for s in probe(recording["thumbnail_url"])["streams"]}["video"]
    assert (thumb["codec_name"], thumb["width"], thumb["height"]) == ("mjpeg", *size)
    assert (recording["video_codec"], recording["audio_codec"]) == ("h264", "aac")
    return found


def test_an_rtmp_session_of_a_recording_room_becomes_a_faststart_mp4(service, room, streamer_token):
    record_on(service, room, streamer_token)
    publisher = ffmpeg_publish(rtmp_publish_url(service, room), seconds=20)
    try:
        assert wait_until(lambda: room_status(service, room) == "live", 15)
        assert publisher.wait(40) == 0, publisher.stderr.read()
    finally:
        if publisher.poll() is None:
            publisher.kill()
    recording = ready(service, room, streamer_token)
    assert recording["end_reason"] == "publisher_left"
    check_playable(recording, 20, (640, 360), sent=20 * FPS)  # -t 20 at 30 fps: every picture sent
    assert abs(recording["duration"] - 20) <= 1.0


def test_staff_start_and_stop_record_part_of_a_live_session(service, room, streamer_token):
    """A room that does not record: staff start recording it live, stop 8 s later; the stream
    goes on and the part between is a recording like any other."""
    staff = staff_token(service, "recording-staff")
    control = f"/api/v1/live/{room['room']['room_id']}/recording/"
    assert api(service, control + "start", {}, staff)[0] == 409  # not live
    publisher = ffmpeg_publish(rtmp_publish_url(service, room), seconds=40)
    try:
        assert wait_until(lambda: room_status(service, room) == "live", 15)
        assert api(service, control + "start", {}, streamer_token)[0] == 403  # owners are not staff
        assert recordings(service, room, streamer_token) == []
        status, body = api(service, control + "start", {}, staff)
        assert (status, body["data"]["recording"]) == (202, "starting"), body
        assert wait_until(lambda: [r["status"] for r in recordings(service, room, streamer_token)] == ["recording"], 5)
        assert api(service, control + "start", {}, staff)[0] == 409  # already recording
        assert wait_until(lambda: False, 8) is False
        status, body = api(service, control + "stop", {}, staff)
        assert (status, body["data"]["recording"]) == (202, "stopping"), body
        recording = ready(service, room, streamer_token)
        assert api(service, control + "stop", {}, staff)[0] == 409  # nothing to stop
        assert publisher.poll() is None and room_status(service, room) == "live"  # the stream goes on
    finally:
        publisher.kill()
        publisher.wait(10)
    assert recording["end_reason"] == "stopped"
    check_playable(recording, recording["duration"], (640, 360))
    assert 6 <= recording["duration"] <= 11, recording["duration"]


@pytest.mark.parametrize(("action", "reason"), [("end", "dropped_by_staff"), ("rotate-key", "key_rotated")])
def test_a_staff_drop_or_a_key_rotation_ends_the_recording_cleanly(service, room, streamer_token, action, reason):
    record_on(service, room, streamer_token)
    publisher = ffmpeg_publish(rtmp_publish_url(service, room), seconds=40)
    try:
        assert wait_until(lambda: room_status(service, room) == "live", 15)
        assert wait_until(lambda: False, 6) is False
        status, _ = api(service, f"/api/v1/live/{room['room']['room_id']}/{action}", {}, streamer_token)
        assert status == 200
        assert wait_until(lambda: publisher.poll() is not None, 5)
    finally:
        publisher.kill()
        publisher.wait(10)
    recording = ready(service, room, streamer_token)
    assert recording["end_reason"] == reason
    check_playable(recording, recording["duration"], (640, 360))
    assert recording["duration"] >= 5


def test_a_publisher_killed_mid_stream_still_leaves_a_playable_recording(service, room, streamer_token):
    record_on(service, room, streamer_token)
    publisher = ffmpeg_publish(rtmp_publish_url(service, room))
    try:
        assert wait_until(lambda: room_status(service, room) == "live", 15)
        assert wait_until(lambda: False, 8) is False  # 8 s of media
    finally:
        publisher.kill()  # SIGKILL: no unpublish, the socket just dies
        publisher.wait(10)
    recording = ready(service, room, streamer_token)
    check_playable(recording, recording["duration"], (640, 360))
    assert recording["duration"] >= 6


async def test_a_whip_session_of_a_recording_room_records_too(service, room, streamer_token):
    """A browser-style publisher (VP8 + Opus): recorded from its H.264/AAC rendition."""
    await asyncio.to_thread(record_on, service, room, streamer_token)
    pc, resource = await whip_publish(service.url(""), room["room"]["room_id"], room["stream_key"],
                                      [PatternVideo(640, 360, 30), ToneAudio()], video_codec="VP8")
    try:
        assert await asyncio.to_thread(wait_until, lambda: room_status(service, room) == "live", 10)
        await asyncio.sleep(8)
    finally:
        await http_async("DELETE", resource)
        await pc.close()
    recording = await asyncio.to_thread(ready, service, room, streamer_token)
    await asyncio.to_thread(check_playable, recording, recording["duration"], (640, 360))
    assert recording["duration"] >= 6


def test_a_server_killed_mid_recording_leaves_a_recording_recovered_at_restart():
    """SIGKILL of the whole server 15 s into a recording, then a restart: the media plane closes
    the session the dead process left open, and the fragmented MP4 it wrote (all but its last
    2 s at most) is finalized into a recording that plays."""
    from tests.support.api import create_room, register
    from tests.support.procs import Service

    with Service() as service:
        token = register(service, "killed-server-owner")
        room = create_room(service, token, "killed mid-recording")
        record_on(service, room, token)
        publisher = ffmpeg_publish(rtmp_publish_url(service, room))
        try:
            assert wait_until(lambda: room_status(service, room) == "live", 15)
            assert wait_until(lambda: False, 15) is False  # 15 s of media
            service.proc.kill()  # SIGKILL: nothing is closed, flushed or reported
            service.proc.wait(10)
        finally:
            publisher.kill()
            publisher.wait(10)
        service.start()  # the same database and RECORDINGS_PATH
        recording = ready(service, room, token)
        assert recording["end_reason"] == "error"
        check_playable(recording, recording["duration"], (640, 360))
        assert recording["duration"] >= 13, recording
