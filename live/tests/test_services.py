"""Services and the media facade: publish authorization, session ends, staff drops."""
from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from live import media_api, services
from live.models import LiveSession, Room, RoomStatus
from live.selectors import room_get_by_stream_key

pytestmark = pytest.mark.django_db(transaction=True)


class RecordingControl:
    def __init__(self) -> None:
        self.dropped: list[tuple[str, str]] = []
        self.event = asyncio.Event()

    async def drop_publisher(self, public_id: str, reason: str) -> bool:
        self.dropped.append((public_id, reason))
        self.event.set()
        return True


def test_key_lookup_is_by_hash_and_exact(room_and_key):
    room, key = room_and_key
    assert room_get_by_stream_key(stream_key=key).pk == room.pk
    assert room_get_by_stream_key(stream_key=key + "x") is None
    assert room_get_by_stream_key(stream_key=room.stream_key_hash) is None


async def test_publish_authorize_opens_a_session(room_and_key):
    room, key = room_and_key
    grant = await media_api.publish_authorize(stream_key=key, protocol="rtmp")
    assert grant.public_id == room.public_id and grant.room_id == room.pk
    session = await LiveSession.objects.aget(pk=grant.session_id)
    assert session.protocol == "rtmp" and session.ended_at is None
    assert (await Room.objects.aget(pk=room.pk)).status == RoomStatus.LIVE


async def test_bad_key_and_second_publisher_are_refused(room_and_key):
    _, key = room_and_key
    with pytest.raises(media_api.PublishRefused) as bad:
        await media_api.publish_authorize(stream_key="sk_wrong", protocol="rtmp")
    assert bad.value.reason == "bad_key" and "sk_wrong" not in bad.value.message
    await media_api.publish_authorize(stream_key=key, protocol="rtmp")
    with pytest.raises(media_api.PublishRefused) as second:
        await media_api.publish_authorize(stream_key=key, protocol="rtmp")
    assert second.value.reason == "already_live"


async def test_a_publish_to_a_held_stream_continues_its_session(room_and_key):
    """Reconnect grace: the node names the sessions whose stream it holds open; a publish to that
    room continues the session (no second session), any other stays refused as already live."""
    room, key = room_and_key
    grant = await media_api.publish_authorize(stream_key=key, protocol="rtmp")
    with pytest.raises(media_api.PublishRefused) as other:
        await media_api.publish_authorize(stream_key=key, protocol="rtmp",
                                          resumable={room.public_id: grant.session_id + 1})
    assert other.value.reason == "already_live"
    again = await media_api.publish_authorize(stream_key=key, protocol="rtmp", client_addr="127.0.0.1:9",
                                              resumable={room.public_id: grant.session_id})
    assert again.resumed and again.session_id == grant.session_id and not grant.resumed
    assert await LiveSession.objects.filter(room=room).acount() == 1
    assert (await Room.objects.aget(pk=room.pk)).status == RoomStatus.LIVE


async def test_publish_ended_records_reason_and_stats_once(room_and_key):
    room, key = room_and_key
    grant = await media_api.publish_authorize(stream_key=key, protocol="rtmp")
    await media_api.publish_ended(session_id=grant.session_id, reason="publisher_left",
                                  bytes_received=1000, peak_viewers=7)
    await media_api.publish_ended(session_id=grant.session_id, reason="error", bytes_received=500, peak_viewers=2)
    session = await LiveSession.objects.aget(pk=grant.session_id)
    assert (session.end_reason, session.bytes_received, session.peak_viewers) == ("publisher_left", 1000, 7)
    assert (await Room.objects.aget(pk=room.pk)).status == RoomStatus.ENDED
    # and the room can go live again
    await media_api.publish_authorize(stream_key=key, protocol="rtmp")


async def test_staff_end_live_reaches_the_media_plane_and_closes_the_session(room_and_key):
    room, key = room_and_key
    control = RecordingControl()
    task = media_api.media_control_register(control)
    await asyncio.sleep(0.05)  # let the listener join its group
    try:
        grant = await media_api.publish_authorize(stream_key=key, protocol="rtmp")
        await sync_to_async(services.room_end_live)(room=await Room.objects.aget(pk=room.pk))
        await asyncio.wait_for(control.event.wait(), 2)
        assert control.dropped == [(room.public_id, "dropped_by_staff")]
        session = await LiveSession.objects.aget(pk=grant.session_id)
        assert session.end_reason == "dropped_by_staff" and session.ended_at is not None
    finally:
        task.cancel()


async def test_key_rotation_drops_the_live_publisher(room_and_key):
    room, key = room_and_key
    control = RecordingControl()
    task = media_api.media_control_register(control)
    await asyncio.sleep(0.05)
    try:
        grant = await media_api.publish_authorize(stream_key=key, protocol="rtmp")
        await sync_to_async(services.stream_key_rotate)(room=await Room.objects.aget(pk=room.pk))
        await asyncio.wait_for(control.event.wait(), 2)
        assert control.dropped == [(room.public_id, "key_rotated")]
        assert (await LiveSession.objects.aget(pk=grant.session_id)).end_reason == "key_rotated"
        with pytest.raises(media_api.PublishRefused):
            await media_api.publish_authorize(stream_key=key, protocol="rtmp")
    finally:
        task.cancel()


async def test_orphaned_sessions_are_closed_at_start(room_and_key):
    _, key = room_and_key
    grant = await media_api.publish_authorize(stream_key=key, protocol="rtmp")
    assert await media_api.sessions_close_orphaned() == 1
    assert (await LiveSession.objects.aget(pk=grant.session_id)).end_reason == "error"


async def test_play_authorize(room_and_key):
    room, _ = room_and_key
    assert await media_api.play_authorize(public_id=room.public_id)
    assert not await media_api.play_authorize(public_id="nope")


def test_stale_session_task(room_and_key):
    from live.tasks import sessions_close_stale

    room, key = room_and_key
    session = services.publish_start(stream_key=key, protocol="rtmp")
    assert sessions_close_stale.apply().get() == 0
    Room.objects.filter(pk=room.pk).update(status=RoomStatus.IDLE)  # a node died without telling us
    assert sessions_close_stale.apply().get() == 1
    session.refresh_from_db()
    assert session.end_reason == "error"


async def test_a_key_for_another_room_is_refused_before_anything_opens(room_and_key, user):
    _, key = room_and_key
    other, _ = await sync_to_async(services.room_create)(owner=user, title="other")
    with pytest.raises(media_api.PublishRefused) as refused:
        await media_api.publish_authorize(stream_key=key, protocol="webrtc", expected_public_id=other.public_id)
    assert refused.value.reason == "wrong_room"
    assert not await LiveSession.objects.aexists()


async def test_viewer_counts_reach_the_room(room_and_key):
    """One count per stream from its media node: RTMP, HTTP-FLV and WebRTC viewers of the hub alike."""
    from channels.layers import get_channel_layer

    room, _ = room_and_key
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(f"room.{room.public_id}", channel)
    for count in (3, 5, 0):
        await media_api.viewers_changed(public_id=room.public_id, count=count)
    assert [(await layer.receive(channel))["data"]["count"] for _ in range(3)] == [3, 5, 0]
