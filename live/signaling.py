"""The socket's message router. Chat and ping are handled by the consumer; WebRTC signaling
(offer/answer/candidate and the mediasoup-style `rtc:*` messages) is registered here by the SFU.

A handler gets the consumer and the message and returns the reply to send (or None).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Handler = Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any] | None]]

# Message types the SFU will own; until it registers them the client hears "not available".
WEBRTC_TYPES = frozenset({
    "offer", "answer", "candidate",
    "rtc:join", "rtc:createTransport", "rtc:connectTransport", "rtc:produce", "rtc:consume", "rtc:leave",
})

_handlers: dict[str, Handler] = {}


def signal_handler_register(message_type: str, handler: Handler) -> None:
    _handlers[message_type] = handler


def signal_handler_get(message_type: str) -> Handler | None:
    return _handlers.get(message_type)
