"""Reads. Views, consumers and the media facade read rooms and sessions only through here."""
from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from .models import LiveSession, Room, RoomStatus
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
    return Room.objects.filter(owner=owner).order_by("-created_at")


def session_get_open(*, room: Room) -> LiveSession | None:
    return room.sessions.filter(ended_at__isnull=True).order_by("-started_at").first()
