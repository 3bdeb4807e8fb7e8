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


# -- rtc:join: who may join the room's call -----------------------------------------------------

async def rtc_request(communicator, kind: str, request_id: int, **fields) -> dict:
    """Send a request and return its reply (the message echoing its id); events are skipped."""
    await communicator.send_json_to({"type": kind, "id": request_id, **fields})
    while True:
        message = await communicator.receive_json_from(timeout=3)
        if message.get("id") == request_id:
            return message


async def receive_event(communicator, kind: str, peer_id: str) -> dict:
    while True:
        message = await communicator.receive_json_from(timeout=3)
        if message["type"] == kind and message["data"].get("peerId") == peer_id:
            return message


def call_peers(public_id: str) -> dict:
    from sfu.rooms import sfu_get

    room = sfu_get().rooms.get(public_id)
    return {peer_id: peer.user for peer_id, peer in room.peers.items()} if room else {}


async def test_anonymous_socket_cannot_join_the_call(room):
    viewer, _, _ = await connect(room.public_id)
    reply = await rtc_request(viewer, "rtc:join", 1, displayName="alice")
    assert reply["type"] == "error" and reply["id"] == 1
    assert reply["data"]["code"] == "login_required" and reply["data"]["request"] == "rtc:join"
    # nor produce media; and the socket stays open
    assert (await rtc_request(viewer, "rtc:produce", 2, sdp="v=0"))["data"]["code"] == "not_joined"
    await viewer.send_json_to({"type": "ping"})
    assert await viewer.receive_json_from(timeout=3) == {"type": "pong", "data": {}}
    assert call_peers(room.public_id) == {}
    await viewer.disconnect()


async def test_anonymous_is_refused_even_when_any_user_may_join(room):
    await sync_to_async(services.room_call_access_update)(room=room, call_access="users")
    viewer, _, _ = await connect(room.public_id)
    assert (await rtc_request(viewer, "rtc:join", 1))["data"]["code"] == "login_required"
    await viewer.disconnect()


async def test_a_logged_in_user_not_invited_is_refused(room, other_user):
    bob, _, _ = await connect(room.public_id, token=token_for(other_user))
    reply = await rtc_request(bob, "rtc:join", 1)
    assert reply["type"] == "error" and reply["data"]["code"] == "not_invited"
    assert (await rtc_request(bob, "rtc:produce", 2, sdp="v=0"))["data"]["code"] == "not_joined"
    # invited but the room is set to owner-only: still refused
    await sync_to_async(services.room_call_access_update)(room=room, call_access="owner",
                                                          call_invitees=[other_user])
    assert (await rtc_request(bob, "rtc:join", 3))["data"]["code"] == "not_invited"
    assert call_peers(room.public_id) == {}
    await bob.disconnect()


async def test_invited_user_joins_under_its_username_not_the_display_name_it_sends(user, other_user, room):
    await sync_to_async(services.room_call_access_update)(room=room, call_invitees=[other_user])
    alice, _, _ = await connect(room.public_id, token=token_for(user))
    bob, _, _ = await connect(room.public_id, token=token_for(other_user))
    owner_joined = await rtc_request(alice, "rtc:join", 1, displayName="the real boss")
    assert owner_joined["type"] == "rtc:joined"
    alice_peer = owner_joined["data"]["peerId"]

    joined = await rtc_request(bob, "rtc:join", 2, displayName="alice", data={"displayName": "alice"})
    assert joined["type"] == "rtc:joined", joined
    bob_peer = joined["data"]["peerId"]
    assert joined["data"]["peers"] == [{"peerId": alice_peer, "user": "alice", "producers": []}]
    heard = await receive_event(alice, "rtc:peerJoined", bob_peer)
    assert heard["data"] == {"peerId": bob_peer, "user": "bob"}
    assert call_peers(room.public_id) == {alice_peer: "alice", bob_peer: "bob"}

    await bob.disconnect()
    assert (await receive_event(alice, "rtc:peerLeft", bob_peer))["data"]["reason"] == "socket_closed"
    await alice.disconnect()
    assert call_peers(room.public_id) == {}


async def test_any_logged_in_user_joins_when_the_room_says_users(room, other_user):
    await sync_to_async(services.room_call_access_update)(room=room, call_access="users")
    bob, _, _ = await connect(room.public_id, token=token_for(other_user))
    joined = await rtc_request(bob, "rtc:join", 1)
    assert joined["type"] == "rtc:joined" and call_peers(room.public_id) == {joined["data"]["peerId"]: "bob"}
    await bob.disconnect()
