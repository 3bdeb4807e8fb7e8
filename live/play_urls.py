"""Push and play URLs of a room, from the configurable public bases (STREAMING_*).

Play URLs are built from the room's public id only; the stream key appears only in push URLs,
which only the owner ever sees.
"""
from __future__ import annotations

from django.conf import settings

from .models import Room


def room_play_urls(room: Room) -> dict[str, str]:
    public_id = room.public_id
    return {
        "hls": f"{settings.STREAMING_HLS_SERVER}/{public_id}.m3u8",
        "flv": f"{settings.STREAMING_FLV_SERVER}/{public_id}.flv",
        "rtmp": f"{settings.STREAMING_RTMP_PLAY_SERVER}/{public_id}",
        "whep": f"{settings.STREAMING_WHEP_SERVER}/{public_id}",
    }


def room_push_urls(room: Room, stream_key: str) -> dict[str, str]:
    return {
        "rtmp_server": settings.STREAMING_RTMP_SERVER,
        "stream_key": stream_key,
        "rtmp": f"{settings.STREAMING_RTMP_SERVER}/{stream_key}",
        "whip": f"{settings.STREAMING_WHIP_SERVER}/{room.public_id}",
    }
