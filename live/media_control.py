"""Staff actions that reach the media plane: the one documented interface going that way.

The control plane (admin, API, Celery) asks for a publisher to be dropped by sending
`{"type": "media.drop", "public_id", "reason"}` to the channel-layer group `media.control`.
Every media node listens on that group (`media_control_listen`) and the node that holds the
room's stream closes the publisher and reports the end through `live.media_api`. With the
in-memory layer this stays in the process; with Redis it reaches every media node.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

MEDIA_CONTROL_GROUP = "media.control"
DROP = "media.drop"
# Channel layers forget group members after a day; re-join well before that.
_REJOIN_EVERY = 3600.0


class MediaControl(Protocol):
    """What a media node implements for the control plane."""

    async def drop_publisher(self, public_id: str, reason: str) -> bool: ...


async def drop_publisher_request_async(*, public_id: str, reason: str) -> None:
    layer = get_channel_layer()
    await layer.group_send(MEDIA_CONTROL_GROUP, {"type": DROP, "public_id": public_id, "reason": reason})


def drop_publisher_request(*, public_id: str, reason: str) -> None:
    async_to_sync(drop_publisher_request_async)(public_id=public_id, reason=reason)


async def media_control_listen(control: MediaControl) -> None:
    """Run forever (as a task): carry drop requests from the channel layer to `control`.
    A failing channel layer (Redis restarting) is logged and the listener goes on, on the same
    channel, so requests queued meanwhile are not lost."""
    channel = await get_channel_layer().new_channel("media-node.")
    while True:
        try:
            await _listen(control, channel)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("media control: the channel layer failed; listening again in 1 s")
            await asyncio.sleep(1)


async def _listen(control: MediaControl, channel: str) -> None:
    layer = get_channel_layer()
    await layer.group_add(MEDIA_CONTROL_GROUP, channel)
    loop = asyncio.get_running_loop()
    joined_at = loop.time()
    try:
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(channel), timeout=_REJOIN_EVERY / 2)
            except TimeoutError:
                message = None
            if loop.time() - joined_at > _REJOIN_EVERY:
                await layer.group_add(MEDIA_CONTROL_GROUP, channel)
                joined_at = loop.time()
            if message is None or message.get("type") != DROP:
                continue
            log.info("media control: drop %s requested (%s)", message.get("public_id"), message.get("reason"))
            try:
                await control.drop_publisher(str(message["public_id"]), str(message["reason"]))
            except Exception:
                log.exception("media control: dropping %s failed", message.get("public_id"))
    except asyncio.CancelledError:
        await layer.group_discard(MEDIA_CONTROL_GROUP, channel)
        raise
