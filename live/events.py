"""Room events pushed to everyone on a room's socket, through the channel layer.

Every event is `{"type": <name>, "data": {...}}` on the wire; on the channel layer it travels
as `{"type": "room.event", "event": <name>, "data": {...}}` to the group `room.<public_id>`.
"""
from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

ROOM_EVENT = "room.event"


def room_group(public_id: str) -> str:
    return f"room.{public_id}"


async def room_event_send(public_id: str, event: str, data: dict[str, Any]) -> None:
    layer = get_channel_layer()
    await layer.group_send(room_group(public_id), {"type": ROOM_EVENT, "event": event, "data": data})


def room_event_send_sync(public_id: str, event: str, data: dict[str, Any]) -> None:
    async_to_sync(room_event_send)(public_id, event, data)
