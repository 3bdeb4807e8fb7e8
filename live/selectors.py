"""Reads. Views, consumers and the media facade read rooms and sessions only through here."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from .models import CallAccess, LiveSession, Recording, Room, RoomStatus
from .stream_keys import stream_key_hash, stream_key_matches


def room_get_by_public_id(*, public_id: str) -> Room | None:
    return Room.objects.select_related("owner").filter(public_id=public_id).first()


def room_get_by_stream_key(*, stream_key: str) -> Room | None:
    room = Room.objects.filter(stream_key_hash=stream_key_hash(stream_key)).first()
    # The indexed lookup found a candidate; confirm in constant time before trusting it.
    if room is None or not stream_key_matches(stream_key, room.stream_key_hash):
        return None
    return room


def room_list_live() -> QuerySet[Room]:
    return Room.objects.select_related("owner").filter(status=RoomStatus.LIVE).order_by("-updated_at")


def room_list_owned(*, owner: AbstractBaseUser) -> QuerySet[Room]:
    return Room.objects.filter(owner=owner).prefetch_related("call_invitees").order_by("-created_at")


def session_get_open(*, room: Room) -> LiveSession | None:
    return room.sessions.filter(ended_at__isnull=True).order_by("-started_at").first()


def call_join_allowed(*, room: Room, user: AbstractBaseUser | AnonymousUser | None) -> bool:
    """May `user` join the room's call (`rtc:join`, and so produce media in it)?

    Never an anonymous or inactive user. The owner always. Others by the room's `call_access`:
    "owner" nobody else, "invited" the users in `call_invitees`, "users" any logged-in user.
    An unknown `call_access` value admits nobody but the owner.
    """
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if user.pk == room.owner_id:
        return True
    if room.call_access == CallAccess.USERS:
        return True
    if room.call_access == CallAccess.INVITED:
        return room.call_invitees.filter(pk=user.pk).exists()
    return False


def users_get_by_usernames(*, usernames: list[str]) -> tuple[list[AbstractBaseUser], list[str]]:
    """The users with exactly these usernames (duplicates dropped) and the names nobody has."""
    wanted = list(dict.fromkeys(usernames))
    found = {u.get_username(): u for u in get_user_model().objects.filter(username__in=wanted)}
    return [found[name] for name in wanted if name in found], [name for name in wanted if name not in found]


def stream_media_key(public_id: str) -> str:
    return f"live:media:{public_id}"


def stream_media_get(*, public_id: str) -> dict | None:
    """The live stream's media as its node last reported it (codecs, notes), or None."""
    from django.core.cache import cache

    return cache.get(stream_media_key(public_id))


NODE_STAT_NODES = "live:stat:nodes"


def node_stat_key(node: str) -> str:
    return f"live:stat:node:{node}"


def node_stats() -> list[dict]:
    """Each media node's last stats report (those that reported in the last seconds)."""
    from django.core.cache import cache

    nodes = cache.get(NODE_STAT_NODES) or {}
    found = cache.get_many([node_stat_key(node) for node in nodes])
    return [found[node_stat_key(node)] for node in sorted(nodes) if node_stat_key(node) in found]


def recording_list(*, room: Room) -> QuerySet[Recording]:
    return Recording.objects.filter(room=room).order_by("-started_at")


def recording_get(*, public_id: str) -> Recording | None:
    return Recording.objects.select_related("room").filter(public_id=public_id).first()
