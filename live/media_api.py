"""The media plane's only door to the control plane (and so to the ORM).

Async, called once per publish/play/end and on a timer for stats, never per packet. Each call
runs the synchronous service in Django's thread pool so the event loop never blocks on the DB.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings

from . import hooks, nodes, selectors, services
from .events import room_event_send
from .media_control import MediaControl, media_control_listen
from .play_urls import holder_urls, this_node_urls
from .services import PublishRefused

log = logging.getLogger(__name__)

__all__ = [
    "CallJoinRefused",
    "MediaControl",
    "PublishGrant",
    "PublishRefused",
    "call_join_authorize",
    "media_control_listen",
    "media_control_register",
    "offer_route",
    "socket_of",
    "web_only",
    "metrics_collectors",
    "node_stat_report",
    "play_authorize",
    "play_ended",
    "play_started",
    "publish_authorize",
    "publish_ended",
    "recording_done",
    "recording_wanted",
    "sessions_close_orphaned",
    "stream_described",
    "stream_holder",
    "viewers_changed",
]


@dataclass(frozen=True, slots=True)
class PublishGrant:
    room_id: int
    public_id: str
    session_id: int
    recording: bool
    resumed: bool = False  # the publish continues a held stream's session (reconnect grace)


@dataclass(frozen=True, slots=True)
class _LiveRoom:
    """What play events need of a live room, kept here so a player costs no database query."""

    room_pk: int
    session_id: int
    hooks: dict


_live: dict[str, _LiveRoom] = {}  # public id -> the live room, while its session is open


def _publish_start(stream_key: str, protocol: str, expected_public_id: str | None, client_addr: str,
                   resumable: Mapping[str, int] | None = None) -> PublishGrant:
    session = services.publish_start(stream_key=stream_key, protocol=protocol, client_addr=client_addr,
                                     expected_public_id=expected_public_id, node=settings.MEDIA_NODE_ID,
                                     resumable=resumable)
    room = session.room
    _live[room.public_id] = _LiveRoom(room.pk, session.pk, dict(room.hooks))
    resumed = bool(resumable) and resumable.get(room.public_id) == session.pk
    return PublishGrant(room_id=room.pk, public_id=room.public_id, session_id=session.pk,
                        recording=room.recording, resumed=resumed)


def _publish_claim(room, protocol: str) -> None:
    """Take the room for this node, cluster-wide; refuse when another node holds it or the
    allocation callback names another node (the error says where to publish)."""
    me = settings.MEDIA_NODE_ID
    if settings.ALLOCATE_URL:
        chosen = nodes.allocate(public_id=room.public_id, owner=room.owner.get_username(), kind=protocol)
        if chosen not in (None, me):
            where = (nodes.node_urls(chosen) or {}).get("rtmp" if protocol == "rtmp" else "whip", "")
            raise PublishRefused("wrong_node", f"room {room.public_id} is allocated to node {chosen}: publish to "
                                               f"{where}")
    holder = nodes.claim(room.public_id, me)
    if holder != me:
        raise PublishRefused("already_live", f"room {room.public_id} is live on node {holder}")


def _publish_check(stream_key: str, expected_public_id: str | None, protocol: str,
                   resumable: Mapping[str, int] | None = None):
    room = services.publish_check(stream_key=stream_key, expected_public_id=expected_public_id, resumable=resumable)
    _publish_claim(room, protocol)
    return room


async def publish_authorize(*, stream_key: str, protocol: str, expected_public_id: str | None = None,
                            client_addr: str = "", resumable: Mapping[str, int] | None = None) -> PublishGrant:
    """Check a stream key, claim the room for this node, ask the on_publish hook when one is set,
    and open the live session; raises PublishRefused (reason "bad_key", "wrong_room" when
    `expected_public_id` is given and the key is another room's, "already_live" (here or on
    another node), "wrong_node" (the allocation callback chose another node), "hook_refused").

    `resumable` (public id -> session id) names the sessions whose stream this node holds open for
    a publisher that dropped: a publish to one of those rooms continues its session (the grant
    says `resumed`) instead of being refused as already live."""
    room = await sync_to_async(_publish_check)(stream_key, expected_public_id, protocol, resumable)
    try:
        if url := hooks.hook_url("on_publish", room.hooks):
            body = hooks.payload("on_publish", room_id=room.public_id, session_id=None, protocol=protocol,
                                 client_addr=client_addr)
            try:
                await hooks.ask("on_publish", url, body)
            except hooks.HookRefused as refused:
                log.info("%s %s: publish to %s refused: %s", protocol, client_addr, room.public_id, refused)
                raise PublishRefused("hook_refused", str(refused)) from None
        return await sync_to_async(_publish_start)(stream_key, protocol, room.public_id, client_addr, resumable)
    except BaseException:
        if not (resumable and room.public_id in resumable):  # a held stream keeps its claim
            await sync_to_async(nodes.release)(room.public_id, settings.MEDIA_NODE_ID)
        raise


class CallJoinRefused(Exception):
    """`rtc:join` refused; `reason` is the socket error code: "login_required", "not_invited",
    "room_not_found"."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _call_join_check(public_id: str, user) -> None:
    if user is None or not user.is_authenticated:
        raise CallJoinRefused("login_required", "log in to join the call")
    room = selectors.room_get_by_public_id(public_id=public_id)
    if room is None:
        raise CallJoinRefused("room_not_found", "room not found")
    if not selectors.call_join_allowed(room=room, user=user):
        raise CallJoinRefused("not_invited", "the room's owner has not allowed you into this call")


async def call_join_authorize(*, public_id: str, user) -> None:
    """May this socket's user join the room's call? Called once per `rtc:join`; raises
    CallJoinRefused. An anonymous user is refused without touching the database."""
    if user is None or not user.is_authenticated:
        raise CallJoinRefused("login_required", "log in to join the call")
    await sync_to_async(_call_join_check)(public_id, user)


def _session_end(session_id: int, reason: str, bytes_received: int, peak_viewers: int) -> None:
    services.session_end(session_id=session_id, reason=reason, bytes_received=bytes_received,
                         peak_viewers=peak_viewers)
    for public_id, live in list(_live.items()):
        if live.session_id == session_id:
            del _live[public_id]
            nodes.release(public_id, settings.MEDIA_NODE_ID)


async def publish_ended(*, session_id: int, reason: str, bytes_received: int, peak_viewers: int) -> None:
    await sync_to_async(_session_end)(session_id, reason, bytes_received, peak_viewers)


async def stream_holder(*, public_id: str) -> dict | None:
    """The public bases of the node holding a room's stream when it is another node than this
    one (a player who reached the wrong node is sent there), else None."""
    return await sync_to_async(_holder_elsewhere, thread_sensitive=False)(public_id)


class _Process:
    web_only = False  # `manage.py serve --no-media`: WHIP/WHEP offers are sent on to a media node


def web_only_set(value: bool) -> None:
    _Process.web_only = value


def web_only() -> bool:
    return _Process.web_only


async def socket_of(*, room_id: str) -> str:
    """The room socket URL of the node that holds the room, or that it is allocated to (WebRTC
    over the socket needs the process with the peer connections)."""
    return await sync_to_async(_socket_of, thread_sensitive=False)(room_id)


def _socket_of(room_id: str) -> str:
    urls = holder_urls(room_id)
    if urls is None:
        room = selectors.room_get_by_public_id(public_id=room_id)
        owner = room.owner.get_username() if room else ""
        urls = nodes.node_urls(nodes.allocate(public_id=room_id, owner=owner, kind="call")) or {}
    return f"{urls.get('ws', '')}?room_id={room_id}" if urls else ""


class NoMediaNode(Exception):
    """A WHIP publish reached the web host and no media node is up."""


async def offer_route(*, kind: str, public_id: str, here: bool) -> str | None:
    """Where a WHIP ("whip") or WHEP ("whep") offer that reached this process should go instead
    (the URL to redirect to), or None to take it here; `here`: this node holds the stream.
    The web host sends a publish to the room's allocated node and a play to the holder; a media
    node sends a play of a stream another node holds there. Raises NoMediaNode."""
    if here:
        return None
    return await sync_to_async(_offer_route, thread_sensitive=False)(kind, public_id)


def _offer_route(kind: str, public_id: str) -> str | None:
    if not _Process.web_only:  # a media node takes every publish itself (publish_authorize claims the room)
        held = _holder_elsewhere(public_id) if kind == "whep" else None
        return f"{held['whep']}/{public_id}" if held else None
    if kind == "whep":
        held = holder_urls(public_id)
        return f"{held['whep']}/{public_id}" if held else None  # None: answered here (404 not live)
    room = selectors.room_get_by_public_id(public_id=public_id)
    if room is None:
        return None  # answered here: 404
    node = nodes.allocate(public_id=public_id, owner=room.owner.get_username(), kind="whip")
    urls = nodes.node_urls(node)
    if urls is None:
        raise NoMediaNode("no media node is up to take the publish; try again shortly")
    return f"{urls['whip']}/{public_id}"


def _holder_elsewhere(public_id: str) -> dict | None:
    holder = nodes.holder(public_id)
    return None if holder in (None, settings.MEDIA_NODE_ID) else nodes.node_urls(holder)


async def play_authorize(*, public_id: str) -> bool:
    room = await sync_to_async(selectors.room_get_by_public_id)(public_id=public_id)
    return room is not None


def _live_room(public_id: str) -> _LiveRoom | None:
    room = selectors.room_get_by_public_id(public_id=public_id)
    session = selectors.session_get_open(room=room) if room is not None else None
    return None if session is None else _LiveRoom(room.pk, session.pk, dict(room.hooks))


async def _live_get(public_id: str) -> _LiveRoom | None:
    live = _live.get(public_id)
    if live is None:  # published through another process: ask the database once
        live = await sync_to_async(_live_room)(public_id)
        if live is not None:
            _live[public_id] = live
    return live


async def play_started(session) -> None:
    """A player (a `media.hub.viewers.ViewerSession`) asks to play: ask the on_play hook when one
    is set; raises PlayRefused("hook_refused") when it says no."""
    from media.hub.viewers import PlayRefused

    live = await _live_get(session.public_id)
    url = hooks.hook_url("on_play", live.hooks if live else None)
    if not url:
        return
    body = hooks.payload("on_play", room_id=session.public_id, session_id=live.session_id if live else None,
                         protocol=session.protocol, client_addr=session.client_addr, viewer_id=session.id)
    try:
        await hooks.ask("on_play", url, body)
    except hooks.HookRefused as refused:
        raise PlayRefused("hook_refused", str(refused)) from None


def play_ended(session) -> None:
    """A player went: the on_play_done notification, when one is set (no database work otherwise)."""
    live = _live.get(session.public_id)
    if live is None or not hooks.hook_url("on_play_done", live.hooks):
        return
    fields = {"session_id": live.session_id, "protocol": session.protocol, "client_addr": session.client_addr,
              "viewer_id": session.id, "bytes_sent": session.sent(),
              "duration": round(time.time() - session.started, 3)}
    notify = sync_to_async(hooks.notify, thread_sensitive=False)
    task = asyncio.get_running_loop().create_task(
        notify("on_play_done", room_pk=live.room_pk, public_id=session.public_id, overrides=live.hooks, **fields))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


_pending: set[asyncio.Task] = set()


async def viewers_changed(*, public_id: str, count: int) -> None:
    """The media node's count of a stream's viewers (RTMP, HTTP-FLV and WebRTC alike) changed."""
    await room_event_send(public_id, "viewers", {"room_id": public_id, "count": count})


STREAM_MEDIA_TTL = 30  # s; the media node refreshes it while the stream is live


async def stream_described(*, public_id: str, media: dict) -> None:
    """The media node's description of a live stream (codecs, notes), for the room's API detail."""
    from django.core.cache import cache

    await cache.aset(selectors.stream_media_key(public_id), media, STREAM_MEDIA_TTL)


def _recording_begin(public_id: str, staff: bool):
    from media.record.from_hub import RecordingPlan

    from . import recordings

    recording = recordings.recording_begin(public_id=public_id, staff=staff)
    return None if recording is None else RecordingPlan(recording.public_id)


async def recording_wanted(public_id: str, *, staff: bool = False):
    """A stream went live: record it? (the room's `recording`, or a staff start), with the Recording row made."""
    return await sync_to_async(_recording_begin)(public_id, staff)


async def recording_done(plan, info: object, reason: str) -> None:
    """The media node closed a recording's file: finalize it (a Celery task).

    Not in the thread every other database call of the process shares: on the embedded default
    the task runs eagerly inside this call, and its remux would hold that thread for seconds."""
    from channels.db import database_sync_to_async

    from . import recordings

    await database_sync_to_async(recordings.recording_end, thread_sensitive=False)(
        recording_id=plan.recording_id, reason=reason)


def metrics_collectors() -> list:
    from .metrics import collectors

    return collectors()


def _heartbeat(stat: dict) -> None:
    nodes.heartbeat({**stat, "urls": this_node_urls()})
    nodes.nodes_sweep(alive=stat["node"])


async def node_stat_report(*, stat: dict) -> None:
    """A media node's stats (media/stats.node_stat), once a second: its heartbeat (kept per node
    for /api/v1/stat and the allocation, renewing its rooms' claims), then a sweep of lost nodes."""
    await sync_to_async(_heartbeat, thread_sensitive=False)(stat)


async def sessions_close_orphaned() -> int:
    """At this node's start: end the sessions its previous run left open."""
    return await sync_to_async(services.sessions_close_orphaned)(node=settings.MEDIA_NODE_ID)


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
