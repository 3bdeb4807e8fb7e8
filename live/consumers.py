"""The room socket `/api/v1/live/ws?room_id=&role=publisher|viewer`.

Everyone in a room gets its events (live, offline, viewers, chat). The publisher role is for
the room's owner only. Chat needs a logged-in user, is length-bounded, rate-limited per user
and delivered HTML-escaped. Errors are sent as `{"type": "error", "data": {"code", "message"}}`;
a refused connection gets that message and then a close code 4401/4403/4404/4400.
"""
from __future__ import annotations

import json
import logging
import time
import unicodedata
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from django.utils.html import escape

from . import selectors
from .events import room_group
from .media_api import socket_of, web_only
from .signaling import WEBRTC_TYPES, signal_disconnect_hooks, signal_handler_get
from .ws_auth import BEARER_SUBPROTOCOL

log = logging.getLogger(__name__)

ROLES = ("publisher", "viewer")
MAX_FRAME = 64 * 1024


@database_sync_to_async
def _room_for(public_id: str) -> tuple[str, int, str] | None:
    room = selectors.room_get_by_public_id(public_id=public_id)
    return (room.public_id, room.owner_id, room.status) if room else None


def clean_chat_text(text: str) -> str:
    """Drop control characters (keep newlines), trim, escape HTML."""
    kept = "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch)[0] != "C")
    return escape(kept.strip())


class RoomConsumer(AsyncWebsocketConsumer):
    room_id: str = ""
    role: str = "viewer"
    group: str = ""

    async def connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.room_id = (query.get("room_id") or [""])[0]
        self.role = (query.get("role") or ["viewer"])[0]
        subprotocol = BEARER_SUBPROTOCOL if BEARER_SUBPROTOCOL in (self.scope.get("subprotocols") or []) else None
        await self.accept(subprotocol)
        refusal = await self._refusal()
        if refusal:
            code, error, message = refusal
            await self._send_error(error, message)
            await self.close(code=code)
            return
        self.group = room_group(self.room_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        user = self.scope["user"]
        await self._send("joined", {"room_id": self.room_id, "role": self.role, "status": self.room_status,
                                    "user": user.username if user.is_authenticated else None})

    async def _refusal(self) -> tuple[int, str, str] | None:
        if self.scope.get("auth_error"):
            return 4401, "bad_token", "the access token is invalid or expired"
        if self.role not in ROLES:
            return 4400, "bad_role", "role must be publisher or viewer"
        room = await _room_for(self.room_id) if self.room_id else None
        if room is None:
            return 4404, "room_not_found", "room not found"
        _, owner_id, self.room_status = room
        user = self.scope["user"]
        if self.role == "publisher":
            if not user.is_authenticated:
                return 4401, "login_required", "the publisher role needs a token"
            if user.pk != owner_id:
                return 4403, "not_owner", "only the room's owner may publish"
        return None

    async def disconnect(self, code: int) -> None:
        for hook in signal_disconnect_hooks():
            try:
                await hook(self)
            except Exception:
                log.exception("room socket: a disconnect hook failed")
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.group:
            return
        if text_data is None or len(text_data) > MAX_FRAME:
            await self._send_error("bad_message", "send JSON text frames under 64 KiB")
            return
        try:
            message = json.loads(text_data)
        except ValueError:
            await self._send_error("bad_json", "the message is not JSON")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self._send_error("bad_message", 'a message is an object with a string "type"')
            return
        await self._route(message)

    async def _route(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "ping":
            await self._send("pong", {})
        elif kind == "chat":
            await self._chat(message)
        elif kind in WEBRTC_TYPES and web_only():
            await self._send("error", {"code": "use_node_socket", "url": await socket_of(room_id=self.room_id),
                                       "message": "WebRTC for this room is on its media node's socket: connect to url"})
        elif handler := signal_handler_get(kind):
            reply = await handler(self, message)
            if reply is not None:
                await self.send(text_data=json.dumps(reply))
        elif kind in WEBRTC_TYPES:
            await self._send_error("not_available", f"{kind}: WebRTC signaling is not enabled on this server")
        else:
            await self._send_error("unknown_type", f"unknown message type {kind[:40]!r}")

    async def _chat(self, message: dict[str, Any]) -> None:
        user = self.scope["user"]
        if not user.is_authenticated:
            await self._send_error("login_required", "log in to chat")
            return
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            await self._send_error("bad_chat", "chat text must be a non-empty string")
            return
        if len(text) > settings.CHAT_MAX_LENGTH:
            await self._send_error("chat_too_long", f"chat text is limited to {settings.CHAT_MAX_LENGTH} characters")
            return
        if not await self._chat_allowed(user.pk):
            await self._send_error("rate_limited", "too many messages, slow down")
            return
        await self.channel_layer.group_send(self.group, {
            "type": "room.event", "event": "chat",
            "data": {"user": user.username, "text": clean_chat_text(text), "at": timezone.now().isoformat()},
        })

    async def _chat_allowed(self, user_id: int) -> bool:
        """Fixed window per user, in the shared cache so it holds across workers."""
        window = settings.CHAT_RATE_WINDOW
        key = f"chat-rate:{user_id}:{int(time.time() // window)}"
        await cache.aadd(key, 0, timeout=window * 2)
        return await cache.aincr(key) <= settings.CHAT_RATE_COUNT

    async def room_event(self, event: dict[str, Any]) -> None:
        if event["event"] in ("live", "offline"):
            self.room_status = "live" if event["event"] == "live" else "ended"
        await self._send(event["event"], event["data"])

    async def _send(self, kind: str, data: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"type": kind, "data": data}))

    async def _send_error(self, code: str, message: str) -> None:
        await self._send("error", {"code": code, "message": message})
