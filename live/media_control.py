"""Staff actions that reach the media plane: the one documented interface going that way.

The control plane (admin, API, Celery) sends to the channel-layer group `media.control`:
- `{"type": "media.drop", "public_id", "reason"}`: drop the room's publisher;
- `{"type": "media.record", "public_id", "action": "start" | "stop"}`: start or stop recording
  the room's live stream now, whatever the room's `recording` setting says for its sessions;
- `{"type": "media.drop_viewer", "viewer_id"}`: close one player (an id from /api/v1/stat).
Every media node listens on that group (`media_control_listen`) and the node that holds the
room's stream acts and reports through `live.media_api` (the session's end, the recording's
row). With the in-memory layer this stays in the process; with Redis it reaches every media node.
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
RECORD = "media.record"
RECORD_ACTIONS = ("start", "stop")
DROP_VIEWER = "media.drop_viewer"
# Channel layers forget group members after a day; re-join well before that.
_REJOIN_EVERY = 3600.0


class MediaControl(Protocol):
    """What a media node implements for the control plane."""

    async def drop_publisher(self, public_id: str, reason: str) -> bool: ...

    async def recording_start(self, public_id: str) -> bool: ...

    async def recording_stop(self, public_id: str) -> bool: ...

    async def viewer_drop(self, viewer_id: str) -> bool: ...


async def drop_publisher_request_async(*, public_id: str, reason: str) -> None:
    layer = get_channel_layer()
    await layer.group_send(MEDIA_CONTROL_GROUP, {"type": DROP, "public_id": public_id, "reason": reason})


def drop_publisher_request(*, public_id: str, reason: str) -> None:
    async_to_sync(drop_publisher_request_async)(public_id=public_id, reason=reason)


def viewer_drop_request(*, viewer_id: str) -> None:
    async_to_sync(get_channel_layer().group_send)(MEDIA_CONTROL_GROUP, {"type": DROP_VIEWER, "viewer_id": viewer_id})


def recording_request(*, public_id: str, action: str) -> None:
    if action not in RECORD_ACTIONS:
        raise ValueError(f"recording action {action!r}")
    async_to_sync(get_channel_layer().group_send)(MEDIA_CONTROL_GROUP,
                                                  {"type": RECORD, "public_id": public_id, "action": action})


async def media_control_listen(control: MediaControl) -> None:
    """Run forever (as a task): carry drop requests from the channel layer to `control`.
    A failing channel layer (Redis restarting) is logged and the listener goes on, on the same
    channel, so requests queued meanwhile are not lost."""
    # The default prefix: channels-redis receives every process-local channel through one Redis
    # key per prefix under one lock, so a channel of another prefix would hold that lock in its
    # own blocking pop and starve the room sockets of the process.
    channel = await get_channel_layer().new_channel()
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
            if message is not None:
                await _carry(control, message)
    except asyncio.CancelledError:
        await layer.group_discard(MEDIA_CONTROL_GROUP, channel)
        raise


async def _carry(control: MediaControl, message: dict) -> None:
    kind, public_id = message.get("type"), str(message.get("public_id"))
    try:
        if kind == DROP:
            log.info("media control: drop %s requested (%s)", public_id, message.get("reason"))
            await control.drop_publisher(public_id, str(message["reason"]))
        elif kind == RECORD and message.get("action") == "start":
            if await control.recording_start(public_id):
                log.info("media control: recording of %s started by staff", public_id)
        elif kind == RECORD and message.get("action") == "stop":
            if await control.recording_stop(public_id):
                log.info("media control: recording of %s stopped by staff", public_id)
        elif kind == DROP_VIEWER:
            await control.viewer_drop(str(message.get("viewer_id")))
    except Exception:
        log.exception("media control: %s of %s failed", kind, public_id)
