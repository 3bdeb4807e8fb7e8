"""Reconnect grace: an RTMP publisher whose connection dies (SIGKILL, no unpublish) and comes back
within PUBLISH_GRACE continues the same stream. Its RTMP, HTTP-FLV and WHEP viewers stay connected
and decode the second publish, timestamps continue forward, HLS marks a discontinuity, and the
room has one live session. A staff drop during the grace ends it at once. A WHIP publisher whose
process dies (its peer connection silent, not closed) is taken over by the next publish with its key
after PUBLISH_TAKEOVER_AFTER s of silence, and continues the same way."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import pytest

from sfu.aiortc_hooks import h264_profiles_register
from tests.sfu.clients import PatternVideo, ToneAudio, http_async, whep_subscribe, whip_publish
from tests.support.api import api, create_room, register
from tests.support.hls import media_playlist
from tests.support.media import FPS, assert_clean, framemd5_frames, live_frames, pyav_errors, wait_until
from tests.support.procs import Service, require_tool

from . import killable_publisher
from .test_rtmp_ingest import flv_url, room_status, rtmp_play_url, start_publisher, stop

pytestmark = pytest.mark.e2e
h264_profiles_register()

GRACE = 8.0
WATCH = 14  # s of media each ffmpeg viewer decodes: about 4 of the first publish, the rest of the second
# The resumed publish starts 40 ms after the newest unit before the drop (media/hub/stream.py), which
# may be audio a frame ahead of the last picture: one step between pictures of up to 40 + 34 ms.
RESUME_GAP = 0.08


@pytest.fixture(scope="module")
def service():
    with Service(env={"PUBLISH_GRACE": str(GRACE)}) as running:
        yield running


@pytest.fixture
def room(service, request):
    return create_room(service, register(service, request.node.name[:30]), title=request.node.name[:100])


def sessions(service, room) -> list[tuple]:
    return service.query("SELECT s.id, s.ended_at, s.end_reason, s.bytes_received FROM live_livesession s "
                         "JOIN live_room r ON r.id = s.room_id WHERE r.public_id = %s ORDER BY s.id",
                         room["room"]["room_id"])


def ffmpeg_viewer(url: str) -> subprocess.Popen:
    return subprocess.Popen([require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-i", url,
                             "-t", str(WATCH), "-map", "0:v", "-map", "0:a", "-f", "framemd5", "-"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill(publisher: subprocess.Popen) -> None:
    publisher.send_signal(signal.SIGKILL)  # the TCP connection dies without FCUnpublish/deleteStream
    publisher.wait(5)


async def test_a_killed_publisher_that_comes_back_continues_for_every_viewer(service, room):
    public_id = room["room"]["room_id"]
    first = start_publisher(service, room)
    second = None
    pcs = []
    try:
        viewers = {name: ffmpeg_viewer(url) for name, url in
                   (("rtmp", rtmp_play_url(service, room)), ("flv", flv_url(service, room)))}
        with pyav_errors() as errors:  # aiortc decodes with FFmpeg, through PyAV
            pc, _, collectors = await whep_subscribe(service.url(""), public_id, kinds=("video",))
            pcs.append(pc)
            video = await asyncio.wait_for(collectors["video"], 10)
            await asyncio.wait_for(video.first, 10)
            await asyncio.sleep(4)
            kill(first)
            killed = time.monotonic()
            await asyncio.sleep(2)
            # held: the room is still live, every viewer still connected
            assert room_status(service, room) == "live"
            assert all(v.poll() is None for v in viewers.values()), {n: v.poll() for n, v in viewers.items()}
            assert len(sessions(service, room)) == 1 and sessions(service, room)[0][1] is None
            second = await asyncio.to_thread(start_publisher, service, room)
            resumed = time.monotonic()
            assert resumed - killed < 5
            await asyncio.sleep(5)
        assert errors == [], errors
        await viewers_continued(pc, video, resumed, viewers, slack=2)

        playlist = media_playlist(f"http://127.0.0.1:{service.media_http_port}/hls/{public_id}.m3u8")
        assert "#EXT-X-DISCONTINUITY" in playlist, playlist

        kill(second)
        assert wait_until(lambda: sessions(service, room)[-1][1] is not None, GRACE + 10), service.log()[-3000:]
        rows = sessions(service, room)
        assert len(rows) == 1, rows  # one live session, ended once, after the grace
        assert rows[0][2] == "publisher_left" and rows[0][3] > 200_000, rows
        assert room_status(service, room) == "ended"
        assert "publisher back" in service.log()
    finally:
        for pc in pcs:
            await pc.close()
        stop(first)
        if second is not None:
            stop(second)


async def viewers_continued(pc, video, resumed: float, viewers: dict, slack: int) -> None:
    """The WHEP viewer kept its connection and gets the new publish at full rate; each ffmpeg
    viewer decoded every picture of both publishes on one timeline: none missing, none twice, the
    second publish's after the first's (it ran WATCH s of media, more than before the drop)."""
    assert pc.connectionState == "connected"
    after = [t for t, *_ in video.frames if t > resumed]
    assert len(after) >= 3 * FPS, f"{len(after)} pictures over WHEP in the 5 s after the publisher came back"
    assert video.rate(resumed + 1.5) >= 27, video.rate(resumed + 1.5)
    for name, viewer in viewers.items():
        out, err = await asyncio.to_thread(viewer.communicate, timeout=30)
        counts, pts, _ = framemd5_frames(out)
        decoded = _decoded(counts, pts, viewer.returncode, err)
        assert_clean(decoded, video=live_frames(WATCH, start=pts[0], slack=slack), max_gap=RESUME_GAP, what=name)
        assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), name
        assert counts["audio"] > 0, name


def _decoded(counts, pts, returncode, stderr):
    from tests.support.media import Decoded

    return Decoded(counts["video"], counts["audio"], round(pts[0] * 1000) if pts else None, 0.0, returncode,
                   stderr, pts)


def test_a_staff_drop_during_the_grace_ends_the_stream_at_once(service, room):
    token = register(service, f"staff-{room['room']['room_id'][:8]}")
    service.manage("shell", "-c", "from django.contrib.auth import get_user_model; "
                   f"get_user_model().objects.filter(username='staff-{room['room']['room_id'][:8]}')"
                   ".update(is_staff=True)")
    publisher = start_publisher(service, room)
    viewer = ffmpeg_viewer(rtmp_play_url(service, room))
    try:
        time.sleep(2)
        kill(publisher)
        time.sleep(0.5)
        assert room_status(service, room) == "live" and viewer.poll() is None
        status, body = api(service, f"/api/v1/live/{room['room']['room_id']}/end", {}, token)
        asked = time.monotonic()
        assert status == 200 and body["data"]["was_live"], body
        viewer.wait(5)  # its stream ended (before the grace would have)
        assert time.monotonic() - asked < 2
        rows = sessions(service, room)
        assert len(rows) == 1 and rows[0][2] == "dropped_by_staff", rows
        again = start_publisher(service, room)  # a new publish opens a new session
        stop(again)
        assert wait_until(lambda: len(sessions(service, room)) == 2, 5)
    finally:
        stop(publisher)
        stop(viewer)


async def test_a_vanished_whip_publisher_is_taken_over_and_continues_for_every_viewer(service, room):
    public_id = room["room"]["room_id"]
    first = await asyncio.to_thread(killable_publisher.start, service, room)
    pcs = []
    try:
        await asyncio.sleep(2)  # the Opus -> AAC bridge is up for the RTMP and FLV viewers
        viewers = {name: ffmpeg_viewer(url) for name, url in
                   (("rtmp", rtmp_play_url(service, room)), ("flv", flv_url(service, room)))}
        with pyav_errors() as errors:
            pc, _, collectors = await whep_subscribe(service.url(""), public_id, kinds=("video",))
            pcs.append(pc)
            video = await asyncio.wait_for(collectors["video"], 10)
            await asyncio.wait_for(video.first, 10)
            await asyncio.sleep(4)
            first.send_signal(signal.SIGKILL)  # no WHIP DELETE, no DTLS close: its ICE consent would run 15 s
            first.wait(5)
            killed = time.monotonic()
            with pytest.raises(AssertionError, match="409"):  # too soon: it may be a pause in its media
                await whip_publish(service.url(""), public_id, room["stream_key"], [PatternVideo(320, 180, 30)],
                                   video_codec="H264")
            await asyncio.sleep(2.5)  # PUBLISH_TAKEOVER_AFTER (2 s) of silence
            assert room_status(service, room) == "live"
            assert all(v.poll() is None for v in viewers.values()), {n: v.poll() for n, v in viewers.items()}
            second, resource = await whip_publish(service.url(""), public_id, room["stream_key"],
                                                  [PatternVideo(320, 180, 30), ToneAudio()], video_codec="H264")
            pcs.append(second)
            resumed = time.monotonic()
            assert resumed - killed < 5
            await asyncio.sleep(5)
        assert errors == [], errors
        await viewers_continued(pc, video, resumed, viewers, slack=3)  # aiortc's encoder paces less evenly

        log = service.log()
        assert "a new publish takes over" in log and "WebRTC publisher back" in log, log[-3000:]
        status, _, _ = await http_async("DELETE", resource)  # a clean end: no grace
        assert status == 200
        assert wait_until(lambda: sessions(service, room)[-1][1] is not None, 10), service.log()[-3000:]
        rows = sessions(service, room)
        assert len(rows) == 1, rows  # one live session for both publishes
        assert rows[0][2] == "publisher_left" and rows[0][3] > 100_000, rows
    finally:
        for peer in pcs:
            await peer.close()
        stop(first)


def test_a_frozen_rtmp_publisher_is_taken_over(service, room):
    """OBS on a dead link: its TCP connection stays open but nothing comes. A publish with the key
    within 2 s is refused (it may be a pause); after PUBLISH_TAKEOVER_AFTER it takes over. Its last
    bytes, held under the merged read's mark (up after the first seconds) until a stats tick, count
    as arrived when they came, so the silence is measured from them."""
    first = start_publisher(service, room)
    viewer = ffmpeg_viewer(rtmp_play_url(service, room))
    second = None
    try:
        time.sleep(4)
        first.send_signal(signal.SIGSTOP)  # the socket stays open, silent
        assert ffmpeg_publish_refused(service, room), service.log()[-2000:]
        assert "already_live" in service.log()
        time.sleep(2.5)
        second = start_publisher(service, room)
        try:
            out, err = viewer.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the rtmp viewer stalled; second publisher alive: {second.poll() is None}\n"
                        + service.log()[-4000:])
        counts, pts, _ = framemd5_frames(out)
        assert_clean(_decoded(counts, pts, viewer.returncode, err), video=live_frames(WATCH, start=pts[0], slack=3),
                     max_gap=RESUME_GAP, what="rtmp viewer")
        assert "a new publish takes over" in service.log()
        assert len(sessions(service, room)) == 1 and sessions(service, room)[0][1] is None
    finally:
        first.send_signal(signal.SIGCONT)
        stop(first)
        stop(viewer)
        if second is not None:
            stop(second)


def ffmpeg_publish_refused(service, room) -> bool:
    """A second ffmpeg publish with the room's key, at once: True when the server refused it."""
    from tests.support.media import ffmpeg_publish

    publisher = ffmpeg_publish(f"rtmp://127.0.0.1:{service.rtmp_port}/live/{room['stream_key']}")
    try:
        publisher.wait(10)
    except subprocess.TimeoutExpired:
        return False
    finally:
        stop(publisher)
    return publisher.returncode != 0
