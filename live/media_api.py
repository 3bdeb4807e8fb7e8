"""The media plane's only door to the control plane (and so to the ORM).

Async, called once per publish/play/end and on a timer for stats, never per packet. Each call
runs the synchronous service in Django's thread pool so the event loop never blocks on the DB.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from asgiref.sync import sync_to_async

from . import selectors, services
from .events import room_event_send
from .media_control import MediaControl, media_control_listen
from .services import PublishRefused

__all__ = [
    "MediaControl",
    "PublishGrant",
    "PublishRefused",
    "media_control_listen",
    "media_control_register",
    "play_authorize",
    "publish_authorize",
    "publish_ended",
    "sessions_close_orphaned",
    "viewers_changed",
]


@dataclass(frozen=True, slots=True)
class PublishGrant:
    room_id: int
    public_id: str
    session_id: int
    recording: bool


def _publish_start(stream_key: str, protocol: str) -> PublishGrant:
    session = services.publish_start(stream_key=stream_key, protocol=protocol)
    room = session.room
    return PublishGrant(room_id=room.pk, public_id=room.public_id, session_id=session.pk,
                        recording=room.recording)


async def publish_authorize(*, stream_key: str, protocol: str) -> PublishGrant:
    """Check a stream key and open the live session; raises PublishRefused."""
    return await sync_to_async(_publish_start)(stream_key, protocol)


async def publish_ended(*, session_id: int, reason: str, bytes_received: int, peak_viewers: int) -> None:
    await sync_to_async(services.session_end)(
        session_id=session_id, reason=reason, bytes_received=bytes_received, peak_viewers=peak_viewers
    )


async def play_authorize(*, public_id: str) -> bool:
    room = await sync_to_async(selectors.room_get_by_public_id)(public_id=public_id)
    return room is not None


async def viewers_changed(*, public_id: str, count: int) -> None:
    await room_event_send(public_id, "viewers", {"room_id": public_id, "count": count})


async def sessions_close_orphaned() -> int:
    return await sync_to_async(services.sessions_close_orphaned)()


_listener: list[asyncio.Task] = []


def media_control_register(control: MediaControl) -> asyncio.Task:
    """Start carrying staff drop requests to `control`; call from the media plane's running loop.

    Registering again replaces the previous control. Cancel the returned task to stop.
    """
    for task in _listener:
        task.cancel()
    task = asyncio.get_running_loop().create_task(media_control_listen(control), name="media-control")
    _listener[:] = [task]
    return task
