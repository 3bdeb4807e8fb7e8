"""The production layout, without Docker: PostgreSQL, Redis, migrations, 1 web process, 2 media
nodes, a Celery worker and beat, nginx with the production template (tests/support/cluster.py),
all with DEBUG=0. Two ffmpeg publishers land on different nodes (the push URLs the API hands out
name the least loaded node); each plays over RTMP, FLV and HLS through the URLs the API returns
(FLV/HLS through nginx); a WHEP viewer of one, sent by the web host to the holder (307), decodes
frames; a room socket on the web process sees the live and viewers events of a stream on a node,
and a staff end on the web process drops a node's publisher.
Then one node is SIGKILLed: within NODE_TIMEOUT its session ends "node_lost", the other stream
plays on, and a new publish of the lost room succeeds on the surviving node."""
from __future__ import annotations

import asyncio
import json
import re
import ssl
import urllib.error
import urllib.request
from datetime import UTC, datetime
from urllib.parse import urljoin

import pytest
import websockets
from aiortc import RTCSessionDescription

from tests.sfu.clients import recv_offer
from tests.support.cluster import Cluster, cluster
from tests.support.media import FPS, assert_live, ffmpeg_decode, ffmpeg_publish, pyav_errors, wait_until

pytestmark = pytest.mark.timeout(240)
TLS = ssl._create_unverified_context()  # nginx's self-signed certificate, made at first start
NODE_TIMEOUT = 6


def call(c: Cluster, path: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        c.base + path, method="POST" if body is not None else "GET",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=10, context=TLS) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def fetch(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10, context=TLS) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def low_latency_through_nginx(url: str) -> None:
    """LL-HLS through nginx to the node's memory: the player's own playlist, then blocking reloads
    for the preload-hint part, each answered once that part exists (never an earlier answer from a
    cache), and the part itself, under the player's id (its bytes are counted)."""
    status, _, body = fetch(url)
    assert status == 200 and "#EXT-X-STREAM-INF" in body.decode(), (status, body[:300])
    media = urljoin(url, next(line for line in body.decode().splitlines() if line and not line.startswith("#")))
    tag = "?" + media.partition("?")[2]  # ?ctx=ID
    hint = None
    for _ in range(4):
        query = "" if hint is None else f"&_HLS_msn={hint[0]}&_HLS_part={hint[1]}"
        status, headers, body = fetch(media + query)
        text = body.decode()
        assert status == 200 and headers.get("Cache-Control") == "no-cache", (status, headers)
        if hint is not None:  # the part the request waited for is listed now
            assert f'URI="part{hint[0]}.{hint[1]}.m4s{tag}"' in text, (hint, text[-600:])
            status, headers, part = fetch(urljoin(media, f"part{hint[0]}.{hint[1]}.m4s{tag}"))
            assert status == 200 and headers.get("Content-Type") == "video/iso.segment" and part[4:8] == b"moof"
        found = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part([0-9]+)\.([0-9]+)\.m4s\?ctx=', text)
        assert found, text[-600:]
        hint = (int(found[1]), int(found[2]))


def room_of(c: Cluster, room_id: str) -> dict:
    status, body = call(c, f"/api/v1/live/{room_id}")
    assert status == 200, body
    return body["data"]


def node_streams(c: Cluster, staff: str) -> dict[str, list[str]]:
    """Each live node's streams, as /api/v1/stat shows them from the nodes' heartbeats."""
    status, body = call(c, "/api/v1/stat", token=staff)
    assert status == 200, body
    placed: dict[str, list[str]] = {node["node"]: [] for node in body["data"]["nodes"]}
    for stream in body["data"]["streams"]:
        placed[stream["node"]].append(stream["room_id"])
    return placed


def session_end(c: Cluster, room_id: str) -> tuple | None:
    rows = c.query("SELECT s.end_reason, s.ended_at, s.node FROM live_livesession s JOIN live_room r ON "
                   "r.id = s.room_id WHERE r.public_id = %s ORDER BY s.id", room_id)
    return rows[0] if rows and rows[0][1] is not None else None


def decodes(url: str, seconds: float = 3) -> None:
    """`seconds` of the live stream from where the viewer joins (the GOP cache's keyframe, or the
    live HLS playlist's third segment from the end), none lost: seconds * 30 pictures, seconds of AAC."""
    decoded = ffmpeg_decode(url, seconds=seconds)
    assert_live(decoded, seconds, starts_near_zero="/hls/" not in url, what=url)


async def whep_through_the_web_host(c: Cluster, room_id: str) -> int:
    """Offer to the web host's WHEP URL, follow its 307 to the holding node, count decoded frames."""
    pc, collectors = await recv_offer()
    offer = pc.localDescription.sdp.encode()
    url = f"{c.base}/whep/{room_id}"
    for _ in range(3):
        request = urllib.request.Request(url, data=offer, method="POST", headers={"Content-Type": "application/sdp"})
        try:
            response = await asyncio.to_thread(urllib.request.build_opener(
                _NoRedirect, urllib.request.HTTPSHandler(context=TLS)).open, request, timeout=10)
        except urllib.error.HTTPError as redirect:
            assert redirect.code == 307, redirect.read()
            url = redirect.headers["Location"]
            assert "/node/" in url, url
            continue
        assert response.status == 201
        await pc.setRemoteDescription(RTCSessionDescription(sdp=response.read().decode(), type="answer"))
        break
    try:
        with pyav_errors() as errors:  # aiortc's decoder is FFmpeg's, through PyAV
            video = await asyncio.wait_for(collectors["video"], 10)
            await asyncio.wait_for(video.first, 10)
            await asyncio.sleep(3)
        assert errors == [], errors
        return len(video.frames)
    finally:
        await pc.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 307 surfaces as HTTPError: the offer is re-posted by hand, as WHIP clients do


async def node_socket(c: Cluster, room_id: str) -> str:
    """WebRTC on the web host's room socket is sent to the node's socket, which takes it."""
    async with websockets.connect(f"wss://127.0.0.1:{c.https_port}/api/v1/live/ws?room_id={room_id}&role=viewer",
                                  ssl=TLS) as socket:
        assert json.loads(await socket.recv())["type"] == "joined"
        await socket.send(json.dumps({"type": "rtc:join"}))
        error = json.loads(await socket.recv())
        assert error["type"] == "error" and error["data"]["code"] == "use_node_socket", error
    url = error["data"]["url"]
    async with websockets.connect(url, ssl=TLS) as socket:
        assert json.loads(await socket.recv())["type"] == "joined"
        await socket.send(json.dumps({"type": "rtc:join"}))
        answer = json.loads(await socket.recv())  # anonymous: the node's SFU answers for itself
        assert answer["data"].get("code") != "use_node_socket", answer
    return url


async def socket_events(c: Cluster, room_id: str, seen: list[dict]) -> None:
    url = f"wss://127.0.0.1:{c.https_port}/api/v1/live/ws?room_id={room_id}&role=viewer"
    async with websockets.connect(url, ssl=TLS) as socket:
        async for message in socket:
            seen.append(json.loads(message))


def test_two_media_nodes_behind_nginx_and_a_lost_node():
    with cluster() as c:
        asyncio.run(_scenario(c))


async def _scenario(c: Cluster) -> None:
    status, body = call(c, "/api/v1/auth/register", {"username": "streamer", "password": "long-enough-1"})
    assert status == 201, body
    token = body["data"]["access"]
    c.manage("shell", "-c", "from django.contrib.auth import get_user_model; "
             "get_user_model().objects.filter(username='streamer').update(is_staff=True)")
    assert await asyncio.to_thread(wait_until, lambda: len(node_streams(c, token)) == 2, 15), node_streams(c, token)

    rooms, publishers, seen = [], [], []
    listening = None
    try:
        for title in ("one", "two"):
            status, body = call(c, "/api/v1/live/create", {"title": title, "push_protocol": "rtmp"}, token)
            assert status == 201, body
            rooms.append(body["data"])
            room_id = body["data"]["room"]["room_id"]
            if title == "two":  # a room socket on the web process watches it go live on its node
                listening = asyncio.ensure_future(socket_events(c, room_id, seen))
                await asyncio.sleep(1)
            publishers.append(ffmpeg_publish(body["data"]["push_urls"]["rtmp"]))
            # The node reports its new stream within a second: the next allocation sees the load.
            assert await asyncio.to_thread(wait_until, lambda room_id=room_id: any(
                room_id in streams for streams in node_streams(c, token).values()), 15), c.logs()
        one, two = (r["room"]["room_id"] for r in rooms)
        placed = node_streams(c, token)
        assert placed == {"media-1": [one], "media-2": [two]}, placed
        await _plays_everywhere(c, one, two, seen)
        await _node_lost(c, token, rooms, publishers)
    finally:
        if listening is not None:
            listening.cancel()
        for publisher in publishers:
            publisher.kill()


async def _plays_everywhere(c: Cluster, one: str, two: str, seen: list[dict]) -> None:
    assert any(e["type"] == "live" for e in seen), seen
    for room_id, node in ((one, "media-1"), (two, "media-2")):
        urls = room_of(c, room_id)["play_urls"]
        assert f"/node/{node}/" in urls["flv"] and f"/node/{node}/" in urls["hls"], urls
        assert urls["rtmp"] == f"rtmp://127.0.0.1:{c.nodes[node].rtmp_port}/live/{room_id}", urls
        for protocol in ("rtmp", "flv", "hls"):
            await asyncio.to_thread(decodes, urls[protocol], 4 if protocol == "hls" else 3)
        assert f"/node/{node}/hls/{room_id}/ll.m3u8" in urls["llhls"], urls
        await asyncio.to_thread(low_latency_through_nginx, urls["llhls"])
    # The generic URL reaches the web host, which redirects (302) to the node that holds the stream.
    for _ in range(2):
        await asyncio.to_thread(decodes, f"{c.base}/flv/{two}.flv")
    assert "/node/media-1/" in await node_socket(c, one)
    frames = await whep_through_the_web_host(c, one)
    # 3 s of wall time after the first picture: 90 live pictures, less the few (200 ms) still in the
    # jitter buffer at the end, plus at most the rest of the 1 s GOP the viewer joined in (the
    # cache's pictures arrive at once)
    assert 3 * FPS - 6 <= frames <= 4 * FPS + 2, frames
    assert any(e["type"] == "viewers" and e["data"]["count"] >= 1 for e in seen), seen


async def _node_lost(c: Cluster, token: str, rooms: list[dict], publishers: list) -> None:
    one, two = (r["room"]["room_id"] for r in rooms)
    # A viewer of the other node's stream watches through the loss.
    watching = asyncio.ensure_future(asyncio.to_thread(ffmpeg_decode, room_of(c, two)["play_urls"]["flv"],
                                                       seconds=NODE_TIMEOUT + 6))
    await asyncio.sleep(2)
    killed = datetime.now(UTC)
    c.kill("media-1")
    assert await asyncio.to_thread(wait_until, lambda: session_end(c, one) is not None, NODE_TIMEOUT + 5), c.logs()
    reason, ended_at, node = session_end(c, one)
    assert (reason, node) == ("node_lost", "media-1")
    assert (ended_at - killed).total_seconds() <= NODE_TIMEOUT + 0.5, (ended_at, killed)
    assert room_of(c, one)["status"] != "live"
    watched = await watching
    # the other node's viewer lost nothing while media-1 died: every picture of the 12 s
    assert_live(watched, NODE_TIMEOUT + 6)
    assert session_end(c, two) is None

    status, body = call(c, f"/api/v1/live/{one}/ingest", token=token)
    assert status == 200 and body["data"]["node"] == "media-2", body
    key = rooms[0]["stream_key"]
    publishers.append(ffmpeg_publish(f"{body['data']['rtmp_server']}/{key}"))
    assert await asyncio.to_thread(wait_until, lambda: room_of(c, one)["status"] == "live", 15), c.logs()
    urls = room_of(c, one)["play_urls"]
    assert f"127.0.0.1:{c.nodes['media-2'].rtmp_port}/" in urls["rtmp"], urls
    await asyncio.to_thread(decodes, urls["rtmp"])

    # A staff action on the web process reaches the node holding the stream (the Redis channel layer).
    status, body = call(c, f"/api/v1/live/{two}/end", {}, token)
    assert status == 200 and body["data"]["was_live"], body
    assert await asyncio.to_thread(wait_until, lambda: publishers[1].poll() is not None, 10), "publisher not dropped"
    assert session_end(c, two)[0] == "dropped_by_staff"
