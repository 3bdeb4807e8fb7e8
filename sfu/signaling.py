"""The SFU's messages on the room socket (`/api/v1/live/ws?room_id=&role=`).

Broadcast (the sources' simple mode), server always answers:
  {"type": "offer", "sdp", "stream_key"}  role=publisher: publish the room live (like WHIP)
  {"type": "offer", "sdp"}                role=viewer:    watch it (like WHEP)
  -> {"type": "answer", "data": {"sdp", "session_id"}}
  {"type": "candidate", "data"?: {"session_id", "candidate", "sdpMid"}}  trickled candidate
Multi-party call (mediasoup-style names; a "transport" is one peer connection per direction):
  {"type": "rtc:join"}                     -> rtc:joined {peerId, peers, iceServers, maxPeers}
                                               or error login_required / not_invited / room_full;
                                               others get rtc:peerJoined {peerId, user}
    Joining (and so producing) needs a logged-in user the room allows (the owner; others by the
    room's `call_access`: owner / invited / users, see live.selectors.call_join_allowed), checked
    once per join through live.media_api.call_join_authorize. A peer's `user` is always its
    account's username: a client's "displayName" is ignored, so nobody can appear as someone else.
  {"type": "rtc:produce", "sdp"}           -> rtc:produced {sdp, producerId}; room gets rtc:newProducer
  {"type": "rtc:consume", "peerId", "sdp"} -> rtc:consumed {sdp, consumerId, peerId}
  {"type": "rtc:leave"}                    -> rtc:left; room gets rtc:peerLeft (also when a peer's
                                               connection times out or its socket closes)
  rtc:createTransport / rtc:connectTransport -> error not_supported (produce/consume carry the SDP).
Every reply echoes the request's "id" when it has one. Errors: {"type": "error", "data": {code, message}}.
"""
from __future__ import annotations

import logging
from typing import Any

from live import media_api
from live.signaling import signal_disconnect_register, signal_handler_register

from .ice import ice_servers
from .rooms import sfu_get
from .sdp import SfuError

log = logging.getLogger(__name__)


def _reply(message: dict, kind: str, data: dict) -> dict:
    reply: dict[str, Any] = {"type": kind, "data": data}
    if "id" in message:
        reply["id"] = message["id"]
    return reply


def _error(message: dict, code: str, text: str) -> dict:
    return _reply(message, "error", {"code": code, "message": text, "request": message.get("type")})


def _field(message: dict, name: str) -> Any:
    data = message.get("data") if isinstance(message.get("data"), dict) else {}
    return message.get(name, data.get(name))


def _state(consumer) -> dict:
    """Per-socket SFU state; the socket closing closes its sessions and leaves the call."""
    state = getattr(consumer, "_sfu_state", None)
    if state is None:
        state = consumer._sfu_state = {"sessions": {}, "peer": None, "room": None}
    return state


async def _socket_closed(consumer) -> None:
    """Registered with live.signaling: the room socket closed."""
    state = getattr(consumer, "_sfu_state", None)
    if state is None:
        return
    if state["peer"] is not None:
        await sfu_get().peer_leave(state["room"], state["peer"], "socket_closed")
        state["peer"] = None
    for session in list(state["sessions"].values()):
        if session.kind == "subscriber":  # a broadcast publisher keeps going without its socket
            await session.close("closed")


async def _call_user(consumer) -> str:
    """The username of the socket's user if the room lets it join the call; raises SfuError
    login_required / not_invited otherwise (one control-plane look-up per join)."""
    user = consumer.scope.get("user")
    try:
        await media_api.call_join_authorize(public_id=consumer.room_id, user=user)
    except media_api.CallJoinRefused as refused:
        status = {"login_required": 401, "not_invited": 403, "room_not_found": 404}.get(refused.reason, 403)
        raise SfuError(status, refused.reason, refused.message) from None
    return user.get_username()


def handles_errors(handler):
    async def wrapped(consumer, message: dict) -> dict | None:
        try:
            return await handler(consumer, message)
        except SfuError as error:
            return _error(message, error.code, error.message)
    wrapped.__name__ = handler.__name__
    return wrapped


def _peer(consumer) -> str:
    client = consumer.scope.get("client") or ("", 0)
    return f"{client[0]}:{client[1]}" if client[0] else ""


@handles_errors
async def on_offer(consumer, message: dict) -> dict:
    sdp = _field(message, "sdp")
    state = _state(consumer)
    sfu = sfu_get()
    if consumer.role == "publisher":
        key = _field(message, "stream_key") or ""
        session, answer = await sfu.broadcast_start(consumer.room_id, str(key), sdp, client_addr=_peer(consumer))
    else:
        session, answer = await sfu.view_start(consumer.room_id, sdp, client_addr=_peer(consumer))
    state["sessions"][session.id] = session
    data = {"sdp": answer, "session_id": session.id}
    if getattr(session, "notes", None):
        data["notes"] = session.notes  # e.g. AAC audio does not play over WebRTC yet
    return _reply(message, "answer", data)


@handles_errors
async def on_answer(consumer, message: dict) -> dict:
    return _error(message, "unexpected_answer", "the server answers offers and never makes one")


@handles_errors
async def on_candidate(consumer, message: dict) -> dict | None:
    state = _state(consumer)
    session_id = _field(message, "session_id")
    sessions = state["sessions"]
    session = sessions.get(session_id) if session_id else (list(sessions.values())[-1] if sessions else None)
    if session is None:
        return _error(message, "no_session", "send the offer first")
    candidate = _field(message, "candidate")
    if isinstance(candidate, dict):
        candidate = candidate.get("candidate")
    if candidate:
        await session.add_candidates([str(candidate)], _field(message, "sdpMid"))
    return None


@handles_errors
async def on_join(consumer, message: dict) -> dict:
    state = _state(consumer)
    if state["peer"] is not None:
        return _error(message, "already_joined", "this socket has already joined the call")
    username = await _call_user(consumer)  # "displayName" is ignored: the name is the username
    peer, room = await sfu_get().peer_join(consumer.room_id, username, consumer.channel_name)
    state["peer"], state["room"] = peer, room
    from django.conf import settings

    others = [p.describe() for p in room.peers.values() if p is not peer]
    return _reply(message, "rtc:joined", {"peerId": peer.peer_id, "peers": others,
                                          "iceServers": ice_servers(username),
                                          "maxPeers": settings.ROOM_MAX_PEERS})


def _joined(consumer) -> dict:
    state = _state(consumer)
    if state["peer"] is None:
        raise SfuError(400, "not_joined", "send rtc:join first")
    return state


@handles_errors
async def on_produce(consumer, message: dict) -> dict:
    state = _joined(consumer)
    session, answer = await sfu_get().peer_produce(state["room"], state["peer"], _field(message, "sdp"))
    return _reply(message, "rtc:produced", {"sdp": answer, "producerId": session.id,
                                            "kinds": sorted(session.codecs)})


@handles_errors
async def on_consume(consumer, message: dict) -> dict:
    state = _joined(consumer)
    peer_id = _field(message, "peerId")
    session, answer = await sfu_get().peer_consume(state["room"], state["peer"], str(peer_id),
                                                   _field(message, "sdp"))
    return _reply(message, "rtc:consumed", {"sdp": answer, "consumerId": session.id, "peerId": peer_id})


@handles_errors
async def on_leave(consumer, message: dict) -> dict:
    state = _joined(consumer)
    await sfu_get().peer_leave(state["room"], state["peer"], "left")
    state["peer"] = state["room"] = None
    return _reply(message, "rtc:left", {})


@handles_errors
async def on_transport(consumer, message: dict) -> dict:
    return _error(message, "not_supported",
                  "this SFU makes one peer connection per direction per peer: rtc:produce and rtc:consume "
                  "carry the SDP offer; there are no separate transports to create or connect")


def handlers_register() -> None:
    for kind, handler in {
        "offer": on_offer, "answer": on_answer, "candidate": on_candidate,
        "rtc:join": on_join, "rtc:produce": on_produce, "rtc:consume": on_consume, "rtc:leave": on_leave,
        "rtc:createTransport": on_transport, "rtc:connectTransport": on_transport,
    }.items():
        signal_handler_register(kind, handler)
    signal_disconnect_register(_socket_closed)
