"""Django admin as staff use it: lists, search, filters, rotate key and end live actions."""
from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model

from live import services
from live.models import LiveSession, Room, RoomStatus
from live.selectors import room_get_by_stream_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    staff = get_user_model().objects.create_superuser("staff", "staff@example.com", "staff-pass-123")
    client.force_login(staff)
    return client


def test_changelists_search_and_filter(staff_client, room_and_key):
    room, key = room_and_key
    services.publish_start(stream_key=key, protocol="rtmp")
    for url in ("/admin/live/room/", f"/admin/live/room/?q={room.public_id}", "/admin/live/room/?status__exact=live",
                "/admin/live/livesession/", "/admin/live/livesession/?ended_at__isempty=1",
                f"/admin/live/room/{room.pk}/change/", "/admin/auth/user/"):
        response = staff_client.get(url)
        assert response.status_code == 200, url
        page = response.content.decode()
        assert key not in page and room.stream_key_hash not in page
    assert room.title in staff_client.get("/admin/live/room/?q=Alice").content.decode()


def test_add_room_shows_the_key_once(staff_client, user):
    response = staff_client.post("/admin/live/room/add/", {
        "title": "From admin", "owner": user.pk, "push_protocol": "rtmp", "call_access": "invited", "_save": "Save",
        "sessions-TOTAL_FORMS": "0", "sessions-INITIAL_FORMS": "0"}, follow=True)
    assert response.status_code == 200
    key = re.search(r"(sk_[\w-]+)", response.content.decode()).group(1)
    room = Room.objects.get(title="From admin")
    assert room_get_by_stream_key(stream_key=key).pk == room.pk
    assert key not in staff_client.get(f"/admin/live/room/{room.pk}/change/").content.decode()


def test_rotate_key_action(staff_client, room_and_key):
    room, old_key = room_and_key
    response = staff_client.post("/admin/live/room/", {"action": "rotate_key", "_selected_action": [room.pk]},
                                 follow=True)
    new_key = re.search(r"(sk_[\w-]+)", response.content.decode()).group(1)
    assert new_key != old_key
    assert room_get_by_stream_key(stream_key=old_key) is None


def test_end_live_action_closes_the_session(staff_client, room_and_key):
    room, key = room_and_key
    session = services.publish_start(stream_key=key, protocol="rtmp")
    response = staff_client.post("/admin/live/room/", {"action": "end_live", "_selected_action": [room.pk]},
                                 follow=True)
    assert "Ended 1 live stream" in response.content.decode()
    session = LiveSession.objects.get(pk=session.pk)
    assert session.end_reason == "dropped_by_staff" and session.ended_at is not None
    assert Room.objects.get(pk=room.pk).status == RoomStatus.ENDED


def test_call_access_filter_and_invitees(staff_client, room_and_key, other_user):
    room, _ = room_and_key
    listed = staff_client.get("/admin/live/room/?call_access__exact=invited").content.decode()
    assert room.public_id in listed
    assert room.public_id not in staff_client.get("/admin/live/room/?call_access__exact=users").content.decode()
    page = staff_client.get(f"/admin/live/room/{room.pk}/change/").content.decode()
    assert 'name="call_invitees"' in page and "SelectFilter" in page  # filter_horizontal's widget
    response = staff_client.post(f"/admin/live/room/{room.pk}/change/", {
        "title": room.title, "owner": room.owner_id, "push_protocol": "rtmp", "call_access": "owner",
        "call_invitees": [other_user.pk], "_save": "Save",
        "sessions-TOTAL_FORMS": "0", "sessions-INITIAL_FORMS": "0"}, follow=True)
    assert response.status_code == 200
    room.refresh_from_db()
    assert room.call_access == "owner" and list(room.call_invitees.all()) == [other_user]


def test_recording_actions_ask_the_media_node(staff_client, room_and_key):
    """Start/stop recording reach the media nodes' control group; a room that is not live, or
    already recording, is refused with a message naming why."""
    import asyncio

    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from live.media_control import MEDIA_CONTROL_GROUP
    from live.models import Recording

    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)("test-node.")
    async_to_sync(layer.group_add)(MEDIA_CONTROL_GROUP, channel)
    room, key = room_and_key

    def act(action: str) -> str:
        return staff_client.post("/admin/live/room/", {"action": action, "_selected_action": [room.pk]},
                                 follow=True).content.decode()

    async def received() -> list[dict]:
        messages = []
        try:
            while True:
                messages.append(await asyncio.wait_for(layer.receive(channel), 1))
        except TimeoutError:
            return messages

    try:
        assert "the room is not live" in act("recording_start")
        services.publish_start(stream_key=key, protocol="rtmp")
        assert "recording started" in act("recording_start")
        Recording.objects.create(room=room)  # what the node does when it starts
        assert "already recording" in act("recording_start")
        assert "recording stopped" in act("recording_stop")
        assert async_to_sync(received)() == [{"type": "media.record", "public_id": room.public_id, "action": action}
                                             for action in ("start", "stop")]
    finally:
        async_to_sync(layer.group_discard)(MEDIA_CONTROL_GROUP, channel)
