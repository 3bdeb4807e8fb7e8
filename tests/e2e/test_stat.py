"""Staff's view of a live stream and its viewers: /api/v1/stat and /metrics while 3 RTMP, 2 FLV,
1 HLS and 1 WHEP viewer watch (exact counts, the source's codecs, size, fps, a bitrate within
10 % of what ffmpeg sends); then staff drop one FLV viewer (it ends, the others play on) and the
publisher (the session ends "dropped_by_staff", every viewer gets the end of the stream)."""
from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import time
import urllib.request

import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.sfu.clients import http_async, whep_subscribe
from tests.support.api import api, staff_token
from tests.support.media import FPS, decode_errors, framemd5_frames, wait_until
from tests.support.procs import require_tool

from .test_rtmp_ingest import flv_url, room_status, rtmp_play_url, rtmp_publish_url, session_of

VIDEO_BPS, AUDIO_BPS = 800_000, 96_000


def cbr_publisher(url: str, seconds: int) -> subprocess.Popen:
    """640x360 at 30 fps, H.264 at a constant 800 kbit/s (x264 nal-hrd=cbr) + AAC 96 kbit/s (mono: lavfi sine)."""
    return subprocess.Popen(
        [require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30",
         "-b:v", "800k", "-minrate", "800k", "-maxrate", "800k", "-bufsize", "400k", "-x264-params", "nal-hrd=cbr",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-f", "flv", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


FRAMES = tempfile.mkdtemp(prefix="mv-stat-")  # each reader's framemd5: a line a decoded frame


def reader(url: str, name: str) -> subprocess.Popen:
    return subprocess.Popen([require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-i", url,
                             "-t", "60", "-map", "0:v", "-f", "framemd5", f"{FRAMES}/{name}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def assert_played_cleanly(player: subprocess.Popen, name: str) -> None:
    """A reader the stream's end (or a staff drop) ended: no damage reported, and every picture
    from the one it started at to the last, none missing (its count is its timeline's span: what
    was sent while it watched, the publisher's 30 fps)."""
    err = player.stderr.read().decode(errors="replace")
    assert player.returncode == 0 and not decode_errors(err), (name, player.returncode, err[-1500:])
    with open(f"{FRAMES}/{name}") as frames:
        counts, pts, _ = framemd5_frames(frames.read())
    assert counts["video"] >= 5 * FPS, (name, counts)  # it watched for 6 s and more
    assert counts["video"] == round((pts[-1] - pts[0]) * FPS) + 1, (name, counts, pts[0], pts[-1])


def stream_stat(service, staff: str, room: dict) -> dict | None:
    status, body = api(service, "/api/v1/stat", token=staff)
    assert status == 200, body
    found = [s for s in body["data"]["streams"] if s["room_id"] == room["room"]["room_id"]]
    return found[0] if found else None


def metrics(url: str) -> dict[tuple, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def viewers_metric(found: dict[tuple, float]) -> dict[str, float]:
    return {dict(labels)["protocol"]: value for (name, labels), value in found.items() if name == "microvibe_viewers"}


async def test_stat_and_metrics_count_every_viewer_and_staff_drop_one_then_the_publisher(service, room,
                                                                                         streamer_token):
    staff = await asyncio.to_thread(staff_token, service, "stat-staff")
    assert api(service, "/api/v1/stat")[0] == 401
    assert api(service, "/api/v1/stat", token=streamer_token)[0] == 403
    publisher = cbr_publisher(rtmp_publish_url(service, room), 60)
    players: list[subprocess.Popen] = []
    pc = None
    try:
        assert await asyncio.to_thread(wait_until, lambda: room_status(service, room) == "live", 15)
        room_id = room["room"]["room_id"]
        socket = await websockets.connect(service.url(f"/api/v1/live/ws?room_id={room_id}&role=viewer")
                                          .replace("http://", "ws://"))
        counts: list[int] = []  # the room's "viewers" events: what the watch page shows

        async def listen() -> None:
            async for message in socket:
                event = json.loads(message)
                if event["type"] == "viewers":
                    counts.append(event["data"]["count"])

        listening = asyncio.ensure_future(listen())
        hls = f"http://127.0.0.1:{service.media_http_port}/hls/{room_id}.m3u8"
        playlist = service.dir / "hls" / f"{room_id}.m3u8"  # on disk: asking over HTTP would be a player
        assert await asyncio.to_thread(wait_until, lambda: playlist.exists() and "#EXTINF" in playlist.read_text(), 15)
        names = [f"{room_id}-{kind}" for kind in ("rtmp-0", "rtmp-1", "rtmp-2", "flv-0", "flv-1", "hls")]
        players = [reader(rtmp_play_url(service, room), name) for name in names[:3]] + \
                  [reader(flv_url(service, room), name) for name in names[3:5]] + [reader(hls, names[5])]
        pc, resource, collectors = await whep_subscribe(service.url(""), room_id)
        want = {"total": 7, "rtmp": 3, "flv": 2, "hls": 1, "webrtc": 1}
        assert await asyncio.to_thread(wait_until, lambda: (stream_stat(service, staff, room) or {}).get(
            "viewers") == want, 20), stream_stat(service, staff, room)
        await asyncio.sleep(6)  # a full bitrate window with every viewer on
        stat = stream_stat(service, staff, room)
        assert stat["viewers"] == want
        assert counts and counts[-1] == 7, counts  # the HLS player counts on the watch page too
        listening.cancel()
        await socket.close()
        assert (stat["video"]["codec"], stat["video"]["width"], stat["video"]["height"]) == ("h264", 640, 360)
        assert 28.5 <= stat["video"]["fps"] <= 31.5, stat["video"]
        assert stat["video"]["keyframe_interval"] == 1.0, stat["video"]  # -g 30 at 30 fps
        assert (stat["audio"]["codec"], stat["audio"]["sample_rate"], stat["audio"]["channels"]) == ("aac", 44100, 1)
        sent = VIDEO_BPS + AUDIO_BPS
        assert abs(stat["bitrate_in"] - sent) <= 0.10 * sent, (stat["bitrate_in"], sent)
        assert stat["publisher"]["protocol"] == "rtmp" and stat["publisher"]["address"].startswith("127.0.0.1:")
        listed = {v["protocol"]: [] for v in stat["viewer_list"]}
        for v in stat["viewer_list"]:
            listed[v["protocol"]].append(v)
        assert {p: len(vs) for p, vs in listed.items()} == {p: n for p, n in want.items() if p != "total"}
        assert all(v["bytes_sent"] > 50_000 and v["address"].startswith("127.0.0.1") for v in stat["viewer_list"]), \
            stat["viewer_list"]

        for url in (service.url("/metrics"), f"http://127.0.0.1:{service.media_http_port}/metrics"):
            found = await asyncio.to_thread(metrics, url)
            assert viewers_metric(found) == {"rtmp": 3, "flv": 2, "hls": 1, "webrtc": 1}, url
            assert found[("microvibe_streams", (("node", stat_node(service, staff)),))] == 1
            assert any(name == "microvibe_received_bytes_total" and v > 100_000 for (name, _), v in found.items())

        # Staff drop one FLV viewer by its id: it gets the end of its stream; the rest play on.
        flv_viewer = listed["flv"][0]
        asked = time.monotonic()
        status, _ = api(service, f"/api/v1/stat/viewers/{flv_viewer['id']}/drop", {}, staff)
        assert status == 202
        flv_players = players[3:5]
        assert await asyncio.to_thread(wait_until, lambda: sum(p.poll() is not None for p in flv_players) == 1, 5)
        assert time.monotonic() - asked < 1.5  # the connection closed within a second (plus ffmpeg's exit)
        await asyncio.sleep(1.5)
        assert sum(p.poll() is None for p in players) == 5  # every other ffmpeg still plays
        assert (stream_stat(service, staff, room) or {})["viewers"]["flv"] == 1
        assert api(service, f"/api/v1/stat/viewers/{flv_viewer['id']}/drop", {}, staff)[0] == 404  # gone

        # Staff drop the publisher: the session ends, every viewer gets the end of the stream.
        status, _ = api(service, f"/api/v1/live/{room_id}/end", {}, staff)
        assert status == 200
        assert await asyncio.to_thread(wait_until, lambda: all(p.poll() is not None for p in players[:5]), 10), \
            [p.poll() for p in players]
        assert session_of(service, room)[1] == "dropped_by_staff"
        for player, name in zip(players[:5], names[:5], strict=True):
            assert_played_cleanly(player, name)
        assert await asyncio.to_thread(wait_until, lambda: pc.connectionState in ("closed", "failed") or
                                       stream_stat(service, staff, room) is None, 10)
    finally:
        for p in [publisher, *players]:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        if pc is not None:
            await http_async("DELETE", resource)
            await pc.close()


def stat_node(service, staff: str) -> str:
    return api(service, "/api/v1/stat", token=staff)[1]["data"]["nodes"][0]["node"]
