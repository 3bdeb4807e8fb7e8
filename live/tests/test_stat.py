"""The control plane's side of stats and metrics: nodes' reports in the cache read by
/api/v1/stat (staff only), the admin's "Live now" page and its drop button, /metrics' access rule."""
from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.core.cache import cache
from prometheus_client.parser import text_string_to_metric_families

from live import media_api, selectors
from live.media_control import MEDIA_CONTROL_GROUP

pytestmark = pytest.mark.django_db

VIEWER = {"id": "a1b2c3d4e5f6", "protocol": "flv", "address": "127.0.0.1:5000", "bytes_sent": 1234, "since": 1.0}


def report(node: str, room_id: str = "room1") -> dict:
    stream = {"room_id": room_id, "publisher": {"protocol": "rtmp", "address": "127.0.0.1:4000"},
              "video": {"codec": "h264", "width": 640, "height": 360, "fps": 30.0}, "audio": None,
              "bitrate_in": 900_000, "bytes_in": 10_000, "uptime": 5.0,
              "viewers": {"total": 1, "rtmp": 0, "flv": 1, "hls": 0, "webrtc": 0}, "viewer_list": [VIEWER],
              "transcodes": []}
    return {"node": node, "uptime": 9.0, "streams": [stream],
            "totals": {"streams": 1, "viewers": 1, "bytes_in": 10_000, "bytes_out": 1234}}


@pytest.fixture(autouse=True)
def _clean_cache():
    keys = [selectors.NODE_STAT_NODES, *(selectors.node_stat_key(n) for n in ("node-a", "node-b"))]
    cache.delete_many(keys)
    yield
    cache.delete_many(keys)


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user(username="staff", password="s3cret-pass!", is_staff=True)


def test_stat_is_for_staff_and_sums_every_node(client_for, user, staff):
    async_to_sync(media_api.node_stat_report)(stat=report("node-a"))
    async_to_sync(media_api.node_stat_report)(stat=report("node-b", "room2"))
    assert client_for().get("/api/v1/stat").status_code == 401
    assert client_for(user).get("/api/v1/stat").status_code == 403
    data = client_for(staff).get("/api/v1/stat").json()["data"]
    assert [s["node"] for s in data["streams"]] == ["node-a", "node-b"]
    assert data["totals"] == {"streams": 2, "viewers": 2, "bytes_in": 20_000, "bytes_out": 2468, "nodes": 2}


def test_dropping_a_viewer_reaches_the_nodes_and_an_unknown_one_is_404(client_for, staff):
    async_to_sync(media_api.node_stat_report)(stat=report("node-a"))
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)("test-node.")
    async_to_sync(layer.group_add)(MEDIA_CONTROL_GROUP, channel)

    async def received() -> dict:
        return await asyncio.wait_for(layer.receive(channel), 2)

    try:
        assert client_for(staff).post("/api/v1/stat/viewers/ffffffffffff/drop").status_code == 404
        assert client_for(staff).post(f"/api/v1/stat/viewers/{VIEWER['id']}/drop").status_code == 202
        assert async_to_sync(received)() == {"type": "media.drop_viewer", "viewer_id": VIEWER["id"]}
    finally:
        async_to_sync(layer.group_discard)(MEDIA_CONTROL_GROUP, channel)


def test_the_admin_live_now_page_lists_viewers_with_a_drop_button(client, staff):
    async_to_sync(media_api.node_stat_report)(stat=report("node-a"))
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    assert "Live now" in client.get("/admin/live/room/").content.decode()
    page = client.get("/admin/live/room/live-now/").content.decode()
    assert VIEWER["id"] in page and 'value="drop_viewer"' in page and "640x360" in page
    response = client.post("/admin/live/room/live-now/", {"action": "drop_viewer", "viewer_id": "nobody"},
                           follow=True)
    assert "not watching now" in response.content.decode()


def test_metrics_are_open_on_loopback_and_need_the_token_elsewhere(client, settings):
    settings.METRICS_TOKEN = "metrics-token-123"
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(response.content.decode())}
    assert {"microvibe_hook_calls", "microvibe_hook_notifications"} <= names
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3",
                      HTTP_AUTHORIZATION="Bearer metrics-token-123").status_code == 200
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer ").status_code == 403
