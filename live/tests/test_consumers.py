"""The room socket through Channels' communicator: auth, roles, events, chat."""
from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from live import services
from live.events import room_event_send
from microvibe.asgi import application

from .conftest import token_for

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(room_id: str, role: str = "viewer", token: str | None = None, subprotocols=None):
    query = f"room_id={room_id}&role={role}" + (f"&token={token}" if token else "")
    communicator = WebsocketCommunicator(application, f"/api/v1/live/ws?{query}", subprotocols=subprotocols)
    connected, subprotocol = await communicator.connect()
    assert connected
    return communicator, await communicator.receive_json_from(timeout=3), subprotocol


async def expect_refused(room_id: str, role: str, token: str | None, code: int, error: str) -> None:
    communicator, first, _ = await connect(room_id, role, token)
    assert first["type"] == "error" and first["data"]["code"] == error
    assert (await communicator.receive_output(timeout=3)) == {"type": "websocket.close", "code": code}


@pytest.fixture
def room(user):
    return services.room_create(owner=user, title="socket room")[0]


async def test_owner_joins_as_publisher_with_query_token(user, room):
    communicator, joined, _ = await connect(room.public_id, "publisher", token_for(user))
    assert joined == {"type": "joined", "data": {"room_id": room.public_id, "role": "publisher",
                                                 "status": "idle", "user": "alice"}}
    await communicator.disconnect()


async def test_token_as_subprotocol(user, room):
    communicator, joined, subprotocol = await connect(room.public_id, "publisher",
                                                      subprotocols=["bearer", token_for(user)])
    assert joined["type"] == "joined" and subprotocol == "bearer"
    await communicator.disconnect()


async def test_refusals(user, other_user, room):
    await expect_refused(room.public_id, "publisher", token_for(other_user), 4403, "not_owner")
    await expect_refused(room.public_id, "publisher", None, 4401, "login_required")
    await expect_refused(room.public_id, "viewer", "garbage", 4401, "bad_token")
    await expect_refused("nosuchroom", "viewer", None, 4404, "room_not_found")
    await expect_refused(room.public_id, "admin", None, 4400, "bad_role")


async def test_room_events_reach_everyone(user, room):
    viewer, _, _ = await connect(room.public_id)
    publisher, _, _ = await connect(room.public_id, "publisher", token_for(user))
    await room_event_send(room.public_id, "viewers", {"room_id": room.public_id, "count": 3})
    for communicator in (viewer, publisher):
        assert await communicator.receive_json_from(timeout=3) == {
            "type": "viewers", "data": {"room_id": room.public_id, "count": 3}}
    await viewer.disconnect()
    await publisher.disconnect()


async def test_live_and_offline_events_follow_the_session(user, room):
    viewer, _, _ = await connect(room.public_id)
    key = await sync_to_async(services.stream_key_rotate)(room=room)
    session = await sync_to_async(services.publish_start)(stream_key=key, protocol="rtmp")
    live = await viewer.receive_json_from(timeout=3)
    assert live == {"type": "live", "data": {"room_id": room.public_id, "protocol": "rtmp"}}
    await sync_to_async(services.session_end)(session_id=session.pk, reason="publisher_left")
    assert await viewer.receive_json_from(timeout=3) == {"type": "offline", "data": {"room_id": room.public_id}}
    await viewer.disconnect()


async def test_chat_is_escaped_and_broadcast(user, room):
    viewer, _, _ = await connect(room.public_id)
    chatter, _, _ = await connect(room.public_id, token=token_for(user))
    await chatter.send_json_to({"type": "chat", "text": "<b>hi</b>\x07 there"})
    for communicator in (viewer, chatter):
        message = await communicator.receive_json_from(timeout=3)
        assert message["type"] == "chat"
        assert message["data"]["user"] == "alice"
        assert message["data"]["text"] == "&lt;b&gt;hi&lt;/b&gt; there"
    await viewer.disconnect()
    await chatter.disconnect()


async def test_chat_rules(user, room, settings):
    settings.CHAT_RATE_COUNT = 3
    anonymous, _, _ = await connect(room.public_id)
    await anonymous.send_json_to({"type": "chat", "text": "hello"})
    assert (await anonymous.receive_json_from(timeout=3))["data"]["code"] == "login_required"

    chatter, _, _ = await connect(room.public_id, token=token_for(user))
    await chatter.send_json_to({"type": "chat", "text": "x" * 501})
    assert (await chatter.receive_json_from(timeout=3))["data"]["code"] == "chat_too_long"
    codes = []
    for _ in range(5):
        await chatter.send_json_to({"type": "chat", "text": "spam"})
        codes.append((await chatter.receive_json_from(timeout=3))["type"])
    # anonymous viewer sees the 3 allowed messages too
    assert codes.count("chat") == 3 and codes.count("error") == 2
    await anonymous.disconnect()
    await chatter.disconnect()


async def test_router_answers_bad_input_without_closing(room, monkeypatch):
    from live import signaling

    monkeypatch.setattr(signaling, "_handlers", {})  # as on a node without the SFU
    viewer, _, _ = await connect(room.public_id)
    await viewer.send_to(text_data="{nope")
    assert (await viewer.receive_json_from(timeout=3))["data"]["code"] == "bad_json"
    await viewer.send_json_to({"type": "launch"})
    assert (await viewer.receive_json_from(timeout=3))["data"]["code"] == "unknown_type"
    await viewer.send_json_to({"type": "offer", "sdp": "v=0"})
    assert (await viewer.receive_json_from(timeout=3))["data"]["code"] == "not_available"
    await viewer.send_json_to({"type": "ping"})
    assert await viewer.receive_json_from(timeout=3) == {"type": "pong", "data": {}}
    await viewer.disconnect()


async def test_registered_signal_handler_is_used(room):
    from live import signaling

    async def echo(consumer, message):
        return {"type": "answer", "data": {"echo": message["sdp"]}}

    signaling.signal_handler_register("offer", echo)
    try:
        viewer, _, _ = await connect(room.public_id)
        await viewer.send_json_to({"type": "offer", "sdp": "v=0"})
        assert await viewer.receive_json_from(timeout=3) == {"type": "answer", "data": {"echo": "v=0"}}
        await viewer.disconnect()
    finally:
        signaling._handlers.pop("offer", None)
    await asyncio.sleep(0)
