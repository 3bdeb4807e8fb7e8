"""Several media nodes over the shared cache: heartbeats, room claims, allocation, lost nodes."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core.cache import cache

from live import media_api, nodes, services
from live.models import LiveSession, RoomStatus

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def report(node: str, *, streams: list[str] = (), viewers: int = 0, transcodes: int = 0) -> dict:
    return {"node": node, "streams": [{"room_id": s} for s in streams],
            "urls": {"rtmp": f"rtmp://{node}:1935/live", "rtmp_play": f"rtmp://{node}:1935/live",
                     "flv": f"http://{node}/flv", "hls": f"http://{node}/hls", "whip": f"http://{node}/whip",
                     "whep": f"http://{node}/whep", "ws": f"ws://{node}/api/v1/live/ws"},
            "totals": {"streams": len(streams), "viewers": viewers, "transcodes": transcodes, "bitrate_in": 0}}


def test_a_room_is_claimed_by_one_node_until_released():
    assert nodes.claim("room1", "a") == "a"
    assert nodes.claim("room1", "b") == "a"
    assert nodes.claim("room1", "a") == "a"  # the holder may claim again
    nodes.release("room1", "b")  # not b's to release
    assert nodes.holder("room1") == "a"
    nodes.release("room1", "a")
    assert nodes.claim("room1", "b") == "b"


def test_allocation_picks_the_least_loaded_live_node():
    nodes.heartbeat(report("a", streams=["x"], viewers=3))
    nodes.heartbeat(report("b"))
    assert nodes.allocate(public_id="new", owner="u", kind="rtmp") == "b"
    nodes.heartbeat(report("b", streams=["y", "z"]))
    assert nodes.allocate(public_id="new", owner="u", kind="rtmp") == "a"
    assert nodes.allocate(public_id="y", owner="u", kind="rtmp") == "b"  # a live room stays on its holder


class _Allocator(BaseHTTPRequestHandler):
    asked: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        _Allocator.asked.append(self.path)
        body = json.dumps({"node": "a"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_the_allocation_callback_names_the_node(settings):
    server = HTTPServer(("127.0.0.1", 0), _Allocator)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.ALLOCATE_URL = f"http://127.0.0.1:{server.server_port}/allocate"
        nodes.heartbeat(report("a", streams=["x", "y"]))
        nodes.heartbeat(report("b"))
        assert nodes.allocate(public_id="r1", owner="alice", kind="rtmp") == "a"
        assert "room=r1" in _Allocator.asked[-1] and "owner=alice" in _Allocator.asked[-1]
        assert "kind=rtmp" in _Allocator.asked[-1]
        settings.ALLOCATE_URL = "http://127.0.0.1:1/down"  # a broken allocator: the least loaded
        assert nodes.allocate(public_id="r1", owner="alice", kind="rtmp") == "b"
    finally:
        server.shutdown()


def test_a_second_publisher_on_another_node_is_refused(room_and_key, settings):
    room, key = room_and_key
    settings.MEDIA_NODE_ID = "a"
    services.publish_start(stream_key=key, protocol="rtmp", node="a")
    nodes.claim(room.public_id, "a")
    settings.MEDIA_NODE_ID = "b"
    with pytest.raises(services.PublishRefused) as refused:
        media_api._publish_check(key, None, "rtmp")
    assert refused.value.reason == "already_live"


def test_a_claim_held_elsewhere_refuses_even_before_the_database_knows(room_and_key, settings):
    room, key = room_and_key
    nodes.claim(room.public_id, "a")
    settings.MEDIA_NODE_ID = "b"
    with pytest.raises(services.PublishRefused) as refused:
        media_api._publish_check(key, None, "rtmp")
    assert refused.value.reason == "already_live" and "node a" in refused.value.message


def test_a_lost_node_has_its_sessions_ended_and_its_claims_dropped(room_and_key, django_capture_on_commit_callbacks):
    room, key = room_and_key
    session = services.publish_start(stream_key=key, protocol="rtmp", node="a")
    nodes.heartbeat(report("a", streams=[room.public_id]))
    nodes.heartbeat(report("b"))
    assert nodes.nodes_sweep(alive="b") == []  # a reports: not lost
    cache.delete("live:stat:node:a")  # its heartbeat lapsed
    with django_capture_on_commit_callbacks(execute=True):
        assert nodes.nodes_sweep(alive="b") == ["a"]
    session.refresh_from_db()
    assert session.end_reason == "node_lost" and session.ended_at is not None
    room.refresh_from_db()
    assert room.status != RoomStatus.LIVE
    assert nodes.holder(room.public_id) is None
    assert list(nodes.nodes_live()) == ["b"]
    assert nodes.nodes_sweep(alive="b") == []  # swept once


def test_start_up_closes_only_this_nodes_orphans(room_and_key, other_user, settings):
    room, key = room_and_key
    other_room, other_key = services.room_create(owner=other_user, title="other")
    mine = services.publish_start(stream_key=key, protocol="rtmp", node="a")
    theirs = services.publish_start(stream_key=other_key, protocol="rtmp", node="b")
    assert services.sessions_close_orphaned(node="a") == 1
    assert LiveSession.objects.get(pk=mine.pk).end_reason == "error"
    assert LiveSession.objects.get(pk=theirs.pk).ended_at is None


def test_ingest_names_the_allocated_nodes_rtmp_server(client_for, user, room_and_key):
    room, _ = room_and_key
    nodes.heartbeat(report("a", streams=["busy"]))
    nodes.heartbeat(report("b"))
    data = client_for(user).get(f"/api/v1/live/{room.public_id}/ingest").json()["data"]
    assert data["node"] == "b" and data["rtmp_server"] == "rtmp://b:1935/live"
    assert data["whip"].endswith(f"/whip/{room.public_id}")


def test_a_live_rooms_play_urls_point_at_its_node(client_for, user, room_and_key):
    room, key = room_and_key
    services.publish_start(stream_key=key, protocol="rtmp", node="b")
    nodes.heartbeat(report("b", streams=[room.public_id]))
    nodes.claim(room.public_id, "b")
    urls = client_for(user).get(f"/api/v1/live/{room.public_id}").json()["data"]["play_urls"]
    assert urls["flv"] == f"http://b/flv/{room.public_id}.flv"
    assert urls["rtmp"] == f"rtmp://b:1935/live/{room.public_id}"
    assert urls["hls"] == f"http://b/hls/{room.public_id}.m3u8"
    assert urls["whep"] == f"http://b/whep/{room.public_id}"


async def test_the_web_host_sends_whip_to_the_allocated_node_and_whep_to_the_holder(room_and_key):
    room, _ = room_and_key
    media_api.web_only_set(True)
    try:
        with pytest.raises(media_api.NoMediaNode):
            await media_api.offer_route(kind="whip", public_id=room.public_id, here=False)
        await cache.aset("live:stat:node:b", report("b"), 10)
        await cache.aset("live:stat:nodes", {"b": True}, None)
        assert await media_api.offer_route(kind="whip", public_id=room.public_id, here=False) == \
            f"http://b/whip/{room.public_id}"
        assert await media_api.offer_route(kind="whep", public_id=room.public_id, here=False) is None  # not live
        await cache.aset(nodes.claim_key(room.public_id), "b", 10)
        assert await media_api.offer_route(kind="whep", public_id=room.public_id, here=False) == \
            f"http://b/whep/{room.public_id}"
    finally:
        media_api.web_only_set(False)
