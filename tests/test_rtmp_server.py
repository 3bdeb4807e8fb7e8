"""The RTMP server and media HTTP server in-process, with a fake control plane.

Pure-Python clients (rtmp.codec.ClientConnection) first, then real ffmpeg clients: ffmpeg must
be installed (tests fail, not skip, without it: CI installs it).
"""

from __future__ import annotations

import asyncio
import shutil
import signal

import pytest

from media.codecs.flv import FlvReader
from media.config import MediaConfig
from media.runtime import MediaPlane, start_media_plane
from rtmp.codec.message import AUDIO, CSID_AUDIO, CSID_VIDEO, STREAM_EOF, VIDEO, AudioData, UserControl, VideoData
from tests.media.conftest import AAC_HEADER, AVC_HEADER, av_stream, flv_body, tag_type
from tests.media.fakes import FakeControl, RtmpTestClient
from tests.support.media import Decoded, assert_live, decode_errors, framemd5_frames


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: these tests need no Django."""


@pytest.fixture
async def plane_and_control(request):
    control = FakeControl(**getattr(request, "param", {}))
    config = MediaConfig(bind="127.0.0.1", rtmp_port=0, http_port=0, rtmp_handshake_timeout=5.0, publish_grace=0.0)
    plane = await start_media_plane(config, control.plane())
    yield plane, control
    await plane.stop()
    assert_clean(plane)


def assert_clean(plane: MediaPlane) -> None:
    assert not plane.rtmp.connections
    assert not plane.rtmp.tasks
    assert not plane.http.connections
    assert len(plane.registry) == 0


async def wait_for(pred, timeout=3.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def send_av(pub: RtmpTestClient, units, *, head: bool = True) -> None:
    conn, sid = pub.conn, pub.stream_id
    out = []
    if head:
        out.append(conn.metadata(sid, {"width": 640.0, "height": 360.0}))
        out.append(conn.send_message(CSID_VIDEO, VIDEO, sid, 0, AVC_HEADER))
        out.append(conn.send_message(CSID_AUDIO, AUDIO, sid, 0, AAC_HEADER))
    for u in units:
        out.append(conn.send_message(CSID_VIDEO if u.kind == "video" else CSID_AUDIO, tag_type(u), sid,
                                     u.ms, flv_body(u)))
    pub.send(b"".join(out))


# ------------------------------------------------------------------ pure-Python clients


async def test_publish_play_and_publisher_leaving(plane_and_control):
    plane, control = plane_and_control
    port = plane.rtmp_port
    pub = await RtmpTestClient.connect(port)
    st = await pub.publish("k1?foo=bar")
    assert st.info["code"] == "NetStream.Publish.Start"
    assert control.authorize_calls == ["k1"]
    units = av_stream(0, 4, gop_ms=1000)
    send_av(pub, units[:100])
    await wait_for(lambda: (s := plane.registry.get("room1")) is not None and s.units_in >= 100)

    player = await RtmpTestClient.connect(port)
    st = await player.play("room1")
    assert st.info["code"] == "NetStream.Play.Start"
    send_av(pub, units[100:], head=False)
    await player.until(lambda e: isinstance(e, VideoData) and e.payload == flv_body(units[-1])
                       or isinstance(e, AudioData) and e.payload == flv_body(units[-1]))
    codes = player.statuses()
    assert codes[:3] == ["NetStream.Play.Reset", "NetStream.Play.Start", "NetStream.Data.Start"]
    media = [e for e in player.events if isinstance(e, (VideoData, AudioData))]
    assert media[0].payload == AVC_HEADER and media[1].payload == AAC_HEADER
    live = media[2:]
    by_payload = {flv_body(u): u for u in units}
    base = by_payload[live[0].payload].ms
    assert by_payload[live[0].payload].keyframe
    # the player's own clock: the first GOP unit near 0, then exactly the source deltas
    assert all(e.timestamp == by_payload[e.payload].ms - base for e in live if e.timestamp)
    assert min(e.timestamp for e in live) == 0
    first = units.index(by_payload[live[0].payload])
    assert [e.payload for e in live] == [flv_body(u) for u in units[first:]]

    # publisher leaves (socket closed): the player gets UnpublishNotify + Stream EOF, then EOF
    pub.close()
    await player.read_to_eof()
    assert "NetStream.Play.UnpublishNotify" in player.statuses()
    assert any(isinstance(e, UserControl) and e.event_type == STREAM_EOF for e in player.events)
    await asyncio.wait_for(control.ended_event.wait(), 2)
    assert control.ended[0]["reason"] == "publisher_left"
    assert control.ended[0]["peak_viewers"] == 1
    assert control.ended[0]["bytes_received"] > sum(len(u.payload) for u in units)
    await wait_for(lambda: not plane.rtmp.connections and not plane.rtmp.tasks)
    assert len(plane.registry) == 0


async def test_wrong_key_refused_with_bad_name(plane_and_control, caplog):
    plane, control = plane_and_control
    pub = await RtmpTestClient.connect(plane.rtmp_port)
    with caplog.at_level("INFO", logger="rtmp.conn"):
        st = await pub.publish("secret-wrong-key")
    assert st.info["code"] == "NetStream.Publish.BadName" and st.info["level"] == "error"
    await pub.read_to_eof()
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "secret-wrong-key" not in refusals[0] and "key#" in refusals[0]
    assert control.ended == [] and len(plane.registry) == 0


@pytest.mark.parametrize("plane_and_control", [{"track_live": True}, {"track_live": False}], indirect=True)
async def test_second_publisher_refused(plane_and_control):
    plane, control = plane_and_control
    first = await RtmpTestClient.connect(plane.rtmp_port)
    assert (await first.publish("k1")).info["code"] == "NetStream.Publish.Start"
    second = await RtmpTestClient.connect(plane.rtmp_port)
    st = await second.publish("k1")
    assert st.info["code"] == "NetStream.Publish.BadName"
    assert "already" in st.info["description"]
    await second.read_to_eof()
    stream = plane.registry.get("room1")
    assert stream is not None and not stream.closed  # the first one is untouched
    first.close()
    await wait_for(lambda: len(plane.registry) == 0)


async def test_play_unknown_stream_not_found(plane_and_control):
    plane, _ = plane_and_control
    player = await RtmpTestClient.connect(plane.rtmp_port)
    st = await player.play("nope")
    assert st.info["code"] == "NetStream.Play.StreamNotFound"
    await player.read_to_eof()
    await wait_for(lambda: not plane.rtmp.connections)


async def test_malformed_chunk_closes_only_that_connection(plane_and_control):
    plane, control = plane_and_control
    pub = await RtmpTestClient.connect(plane.rtmp_port)
    await pub.publish("k1")
    player = await RtmpTestClient.connect(plane.rtmp_port)
    await player.play("room1")
    bad = await RtmpTestClient.connect(plane.rtmp_port)
    bad.writer.write(b"\x82" + b"\x00" * 20)  # fmt 2 on a chunk stream never opened
    await bad.read_to_eof()
    units = av_stream(0, 2)
    send_av(pub, units)
    await player.until(lambda e: isinstance(e, (VideoData, AudioData)) and e.payload == flv_body(units[-1]))
    assert plane.registry.get("room1") is not None
    pub.close()
    player.close()
    await wait_for(lambda: not plane.rtmp.connections and len(plane.registry) == 0)


async def test_staff_drop_closes_publisher_within_a_second(plane_and_control):
    plane, control = plane_and_control
    pub = await RtmpTestClient.connect(plane.rtmp_port)
    await pub.publish("k1")
    player = await RtmpTestClient.connect(plane.rtmp_port)
    await player.play("room1")
    assert await plane.node_control.drop_publisher("room1", "key_rotated") is True
    await asyncio.wait_for(pub.read_to_eof(), 1.0)
    await asyncio.wait_for(player.read_to_eof(), 1.0)
    assert "NetStream.Play.UnpublishNotify" in player.statuses()
    await asyncio.wait_for(control.ended_event.wait(), 1)
    assert control.ended[0]["reason"] == "key_rotated"
    assert await plane.node_control.drop_publisher("room1", "dropped_by_staff") is False
    await wait_for(lambda: not plane.rtmp.connections)


async def test_viewer_counts_reported_once_per_change(plane_and_control):
    plane, control = plane_and_control
    pub = await RtmpTestClient.connect(plane.rtmp_port)
    await pub.publish("k1")
    players = [await RtmpTestClient.connect(plane.rtmp_port) for _ in range(3)]
    for p in players:
        await p.play("room1")
    await plane.report_viewers()
    await plane.report_viewers()
    assert control.viewer_counts == [("room1", 3)]
    players[0].close()
    await wait_for(lambda: plane.registry.get("room1").viewer_count == 2)
    await plane.report_viewers()
    assert control.viewer_counts[-1] == ("room1", 2)
    pub.close()
    for p in players[1:]:
        await p.read_to_eof()


async def test_http_flv_ends_when_publisher_leaves(plane_and_control):
    plane, control = plane_and_control
    pub = await RtmpTestClient.connect(plane.rtmp_port)
    await pub.publish("k1")
    units = av_stream(0, 3, gop_ms=1000)
    send_av(pub, units[:50])
    await wait_for(lambda: plane.registry.get("room1").units_in >= 50)
    reader, writer = await asyncio.open_connection("127.0.0.1", plane.http_port)
    writer.write(b"GET /flv/room1.flv HTTP/1.1\r\nHost: x\r\n\r\n")
    send_av(pub, units[50:], head=False)
    await asyncio.sleep(0.2)
    pub.close()
    data = await asyncio.wait_for(reader.read(), 3)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Type: video/x-flv" in head and b"Transfer-Encoding: chunked" in head
    assert b"Access-Control-Allow-Origin: *" in head and b"Cache-Control: no-cache" in head
    from tests.media.test_flv_fanout import dechunk

    flv, ended = dechunk(body)
    assert ended
    tags = FlvReader().feed(flv)
    assert [t.tag_type for t in tags[:3]] == [18, 9, 8]
    media = tags[3:]
    # The viewer joins at a keyframe, with the stream's own timestamps (as nginx-rtmp's players get),
    # and gets every unit from there on.
    keyframes = [i for i, u in enumerate(units) if u.kind == "video" and u.keyframe]
    joined = next(i for i in keyframes if units[i].ms == media[0].timestamp)
    assert media[0].payload[0] == 0x17
    assert [(t.timestamp, t.payload) for t in media] == [(u.ms, flv_body(u)) for u in units[joined:]]
    assert media[-1].payload == flv_body(units[-1])
    writer.close()
    await wait_for(lambda: not plane.http.connections)


# ------------------------------------------------------------------ real ffmpeg clients

FFMPEG = shutil.which("ffmpeg")
PUSH = ("-re -f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i sine=frequency=440:sample_rate=44100 "
        "-c:v libx264 -preset veryfast -tune zerolatency -g 30 -c:a aac -f flv").split()


def require_ffmpeg() -> str:
    if FFMPEG is None:  # never skip (CI=true or not): the media path must be tested for real
        pytest.fail("ffmpeg is not installed (apt-get install ffmpeg)")
    return FFMPEG


async def run_ffmpeg(*args: str, loglevel: str = "error") -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        require_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", loglevel, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def decoded_frames(url: str, seconds: float) -> Decoded:
    """``seconds`` of ``url`` decoded, a framemd5 line a frame, as tests.support.media.ffmpeg_decode
    does (here on this test's event loop, the media plane's)."""
    started = asyncio.get_running_loop().time()
    proc = await run_ffmpeg("-rw_timeout", "5000000", "-i", url, "-t", str(seconds),
                            "-map", "0:v", "-map", "0:a", "-f", "framemd5", "-")
    out, err = b"", b""
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds + 20)
    finally:
        if proc.returncode is None:
            proc.kill()
    counts, video_pts, starts = framemd5_frames(out.decode())
    return Decoded(counts["video"], counts["audio"], round(video_pts[0] * 1000) if video_pts else None,
                   asyncio.get_running_loop().time() - started, proc.returncode, err.decode(errors="replace"),
                   video_pts, starts.get("audio"))


async def test_ffmpeg_push_rtmp_and_flv_playback_then_publisher_killed(plane_and_control):
    plane, control = plane_and_control
    pub = await asyncio.create_subprocess_exec(
        require_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", *PUSH,
        f"rtmp://127.0.0.1:{plane.rtmp_port}/live/k1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_for(lambda: (s := plane.registry.get("room1")) is not None and s.gop, timeout=15)
        rtmp_url = f"rtmp://127.0.0.1:{plane.rtmp_port}/live/room1"
        flv_url = f"http://127.0.0.1:{plane.http_port}/flv/room1.flv"
        rtmp, flv = await asyncio.gather(decoded_frames(rtmp_url, 3), decoded_frames(flv_url, 3))
        # 3 s from the GOP cache's keyframe on, none lost: 3 * 30 pictures, 3 s of 44.1 kHz AAC
        assert_live(rtmp, 3, what="rtmp")
        assert_live(flv, 3, what="flv")
        # viewers that stay on until the publisher dies
        rtmp_viewer = await run_ffmpeg("-i", rtmp_url, "-f", "null", "-")
        flv_viewer = await run_ffmpeg("-i", flv_url, "-f", "null", "-")
        await wait_for(lambda: plane.registry.get("room1").viewer_count == 2, timeout=10)
    finally:
        if pub.returncode is None:
            pub.send_signal(signal.SIGKILL)
        await pub.wait()
    await asyncio.wait_for(control.ended_event.wait(), 5)
    assert control.ended[0]["reason"] in ("publisher_left", "error")
    assert control.ended[0]["peak_viewers"] >= 2
    assert control.ended[0]["bytes_received"] > 100_000
    for viewer in (rtmp_viewer, flv_viewer):
        _, err = await asyncio.wait_for(viewer.communicate(), 10)  # both end by themselves, with no damage
        assert viewer.returncode == 0 and not decode_errors(err.decode(errors="replace")), err[-2000:]
    await wait_for(lambda: not plane.rtmp.connections and not plane.http.connections and not plane.rtmp.tasks)
    assert len(plane.registry) == 0


async def test_ffmpeg_wrong_key_and_second_publisher_refused(plane_and_control):
    plane, control = plane_and_control
    url = f"rtmp://127.0.0.1:{plane.rtmp_port}/live/"
    wrong = await run_ffmpeg(*PUSH, url + "nokey")
    assert await asyncio.wait_for(wrong.wait(), 15) != 0
    first = await run_ffmpeg(*PUSH, url + "k1")
    try:
        await wait_for(lambda: plane.registry.get("room1") is not None, timeout=15)
        second = await run_ffmpeg(*PUSH, url + "k1")
        assert await asyncio.wait_for(second.wait(), 15) != 0
        assert plane.registry.get("room1") is not None
    finally:
        first.terminate()
        await first.wait()
    await asyncio.wait_for(control.ended_event.wait(), 5)
    await wait_for(lambda: not plane.rtmp.connections and len(plane.registry) == 0)


async def test_the_loop_lag_histogram_fills_from_the_stats_tick(plane_and_control):
    plane, _ = plane_and_control
    await wait_for(lambda: plane.metrics.get_sample_value("microvibe_event_loop_lag_seconds_count") >= 1,
                   timeout=3)
    assert plane.metrics.get_sample_value("microvibe_event_loop_lag_seconds_bucket", {"le": "1.0"}) >= 1
