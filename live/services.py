"""Writes. Every change to rooms and sessions goes through these functions, whoever asks:
the REST API, admin, Celery tasks, and the media plane (through `live.media_api`)."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from . import hooks, media_control
from .events import room_event_send_sync
from .models import CallAccess, EndReason, LiveSession, PushProtocol, Room, RoomStatus
from .selectors import room_get_by_stream_key, session_get_open
from .stream_keys import stream_key_generate, stream_key_hash, stream_key_log_id

log = logging.getLogger(__name__)


class PublishRefused(Exception):
    """A publish attempt the control plane says no to; `reason` is machine-readable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@transaction.atomic
def room_create(*, owner: AbstractBaseUser, title: str, push_protocol: str = PushProtocol.RTMP,
                recording: bool = False, call_access: str = CallAccess.INVITED,
                call_invitees: Iterable[AbstractBaseUser] = ()) -> tuple[Room, str]:
    """Create a room; returns it with its stream key, the only time the key is known in clear."""
    _call_access_check(call_access)
    stream_key = stream_key_generate()
    room = Room.objects.create(
        owner=owner, title=title, push_protocol=push_protocol, recording=recording, call_access=call_access,
        stream_key_hash=stream_key_hash(stream_key),
    )
    invitees = list(call_invitees)
    if invitees:
        room.call_invitees.set(invitees)
    return room, stream_key


@transaction.atomic
def room_call_access_update(*, room: Room, call_access: str | None = None,
                            call_invitees: Iterable[AbstractBaseUser] | None = None) -> Room:
    """Set who may join the room's call (see `selectors.call_join_allowed`); `call_invitees`
    replaces the whole list. None leaves that part as it is. Peers already in the call stay."""
    if call_access is not None:
        _call_access_check(call_access)
        room.call_access = call_access
        room.save(update_fields=["call_access", "updated_at"])
    if call_invitees is not None:
        room.call_invitees.set(list(call_invitees))
    return room


def room_recording_update(*, room: Room, recording: bool | None = None, public: bool | None = None) -> Room:
    """Whether the room's next live sessions are recorded, and whether anyone may list and play
    its recordings (else the owner and staff). None leaves that part as it is."""
    if recording is not None:
        room.recording = recording
    if public is not None:
        room.recordings_public = public
    room.save(update_fields=["recording", "recordings_public", "updated_at"])
    return room


def _call_access_check(call_access: str) -> None:
    if call_access not in CallAccess.values:
        raise ValueError(f"call_access must be one of {', '.join(CallAccess.values)}")


def stream_key_rotate(*, room: Room) -> str:
    """Replace the key; a publisher using the old one is dropped."""
    stream_key = stream_key_generate()
    room.stream_key_hash = stream_key_hash(stream_key)
    room.key_rotated_at = timezone.now()
    room.save(update_fields=["stream_key_hash", "key_rotated_at", "updated_at"])
    if room.is_live:
        room_end_live(room=room, reason=EndReason.KEY_ROTATED)
    return stream_key


def room_end_live(*, room: Room, reason: str = EndReason.DROPPED_BY_STAFF) -> bool:
    """Staff or owner ends the live: the media plane drops the publisher, the session closes.

    Returns False when the room was not live. The session is closed here at once rather than
    waiting for the media plane, so the database is right even if no media node answers.
    """
    session = session_get_open(room=room)
    was_live = room.is_live or session is not None
    media_control.drop_publisher_request(public_id=room.public_id, reason=reason)
    if session is not None:
        session_end(session_id=session.pk, reason=reason)
    elif room.is_live:
        _room_set_offline(room)
    return was_live


def viewer_drop(*, viewer_id: str) -> bool:
    """Staff: close one viewer; False when no node reports it watching."""
    from .selectors import node_stats

    watching = any(v["id"] == viewer_id for n in node_stats() for s in n["streams"] for v in s["viewer_list"])
    if watching:
        media_control.viewer_drop_request(viewer_id=viewer_id)
    return watching


def room_delete(*, room: Room) -> None:
    if room.is_live:
        room_end_live(room=room, reason=EndReason.DROPPED_BY_STAFF)
    room.delete()


def publish_check(*, stream_key: str, expected_public_id: str | None = None,
                  resumable: Mapping[str, int] | None = None) -> Room:
    """The room a publish with this key is for, or PublishRefused. WHIP names the room in its URL
    (`expected_public_id`): a key of another room is refused before anything opens. A live room
    is refused unless its open session is in `resumable` (public id -> session id: the streams a
    media node holds open for a publisher that dropped, see media/hub/registry.py)."""
    room = room_get_by_stream_key(stream_key=stream_key)
    if room is None:
        raise PublishRefused("bad_key", f"unknown or rotated stream key {stream_key_log_id(stream_key)}")
    if expected_public_id is not None and room.public_id != expected_public_id:
        raise PublishRefused("wrong_room", f"stream key {stream_key_log_id(stream_key)} is not for this room")
    _live_check(room, resumable)
    return room


def _live_check(room: Room, resumable: Mapping[str, int] | None) -> LiveSession | None:
    """The open session a publish continues (None: a new one), or PublishRefused("already_live")."""
    session = session_get_open(room=room)
    if session is not None and resumable and resumable.get(room.public_id) == session.pk:
        return session
    if room.is_live or session is not None:
        raise PublishRefused("already_live", f"room {room.public_id} already has a publisher")
    return None


@transaction.atomic
def publish_start(*, stream_key: str, protocol: str, expected_public_id: str | None = None,
                  client_addr: str = "", node: str = "", resumable: Mapping[str, int] | None = None) -> LiveSession:
    """Authorize a publish by stream key and open its live session (see `publish_check`), or
    return the open session it continues (a reconnect within the grace: no new session, no
    second "live" event)."""
    room = publish_check(stream_key=stream_key, expected_public_id=expected_public_id, resumable=resumable)
    room = Room.objects.select_for_update().get(pk=room.pk)
    if (continued := _live_check(room, resumable)) is not None:
        return continued
    session = LiveSession.objects.create(room=room, protocol=protocol, client_addr=client_addr[:64], node=node[:64])
    room.status = RoomStatus.LIVE
    room.save(update_fields=["status", "updated_at"])
    public_id = room.public_id
    transaction.on_commit(lambda: room_event_send_sync(public_id, "live", {"room_id": public_id,
                                                                          "protocol": protocol}))
    return session


def session_end(*, session_id: int, reason: str, bytes_received: int = 0, peak_viewers: int = 0) -> None:
    """Close a session (idempotent: the first reason wins, stats only grow) and set the room offline."""
    with transaction.atomic():
        session = LiveSession.objects.select_related("room").select_for_update().filter(pk=session_id).first()
        if session is None:
            return
        LiveSession.objects.filter(pk=session_id).update(
            bytes_received=Greatest(F("bytes_received"), bytes_received),
            peak_viewers=Greatest(F("peak_viewers"), peak_viewers),
        )
        if session.ended_at is not None:
            return
        session.ended_at = timezone.now()
        session.end_reason = reason
        session.save(update_fields=["ended_at", "end_reason"])
        _room_set_offline(session.room)
        room = session.room
        hooks.notify("on_publish_done", room_pk=room.pk, public_id=room.public_id, overrides=room.hooks,
                     session_id=session.pk, protocol=session.protocol, client_addr=session.client_addr,
                     reason=reason, duration=round((session.ended_at - session.started_at).total_seconds(), 3),
                     bytes_received=max(bytes_received, session.bytes_received),
                     peak_viewers=max(peak_viewers, session.peak_viewers))


def sessions_close_orphaned(*, node: str, reason: str = EndReason.ERROR) -> int:
    """At a media node's start: its sessions still open were left by its previous run (and
    sessions of no node, from before nodes were recorded). Other nodes' sessions are theirs."""
    open_sessions = LiveSession.objects.filter(ended_at__isnull=True, node__in=[node, ""]).only("pk")
    count = 0
    for session in open_sessions:
        session_end(session_id=session.pk, reason=reason)
        count += 1
    if count:
        log.warning("closed %d live session(s) left open by a previous run of node %s", count, node)
    from .recordings import recordings_recover

    recordings_recover()  # their recordings: finalize what the dead process wrote
    return count


def sessions_close_lost(*, node: str) -> list[str]:
    """A media node stopped its heartbeat: end its open sessions ("node_lost"); their rooms' ids."""
    lost = list(LiveSession.objects.filter(ended_at__isnull=True, node=node).select_related("room"))
    for session in lost:
        session_end(session_id=session.pk, reason=EndReason.NODE_LOST)
    if lost:
        log.warning("media node %s lost: ended %d live session(s)", node, len(lost))
        from .recordings import recordings_recover

        recordings_recover()
    return [session.room.public_id for session in lost]


def _room_set_offline(room: Room) -> None:
    Room.objects.filter(pk=room.pk, status=RoomStatus.LIVE).update(status=RoomStatus.ENDED, updated_at=timezone.now())
    public_id = room.public_id
    transaction.on_commit(lambda: room_event_send_sync(public_id, "offline", {"room_id": public_id}))
