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
# Called with the consumer when a socket closes (the SFU closes that socket's sessions).
_disconnect_hooks: list[Callable[[Any], Awaitable[None]]] = []


def signal_handler_register(message_type: str, handler: Handler) -> None:
    _handlers[message_type] = handler


def signal_handler_get(message_type: str) -> Handler | None:
    return _handlers.get(message_type)


def signal_disconnect_register(hook: Callable[[Any], Awaitable[None]]) -> None:
    if hook not in _disconnect_hooks:
        _disconnect_hooks.append(hook)


def signal_disconnect_hooks() -> tuple[Callable[[Any], Awaitable[None]], ...]:
    return tuple(_disconnect_hooks)
