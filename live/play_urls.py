"""Push and play URLs of a room, from the public bases of the media node that holds it.

A live room's play URLs point at the node that holds its stream (its heartbeat carries the
node's public bases); a room that is not live gets the STREAMING_* bases (through nginx, any
node redirects to the holder). The push URL names the node the room is allocated to
(`live.nodes.allocate`). Play URLs are built from the room's public id only; the stream key
appears only in push URLs, which only the owner ever sees.
"""
from __future__ import annotations

from django.conf import settings

from . import nodes
from .models import Room


def _ws(http_base: str) -> str:
    return "ws" + http_base[4:] if http_base.startswith("http") else http_base


def default_urls() -> dict[str, str]:
    """The bases clients are told without a node in mind (one node, or nginx's generic routes)."""
    return {
        "rtmp": settings.STREAMING_RTMP_SERVER,
        "rtmp_play": settings.STREAMING_RTMP_PLAY_SERVER,
        "flv": settings.STREAMING_FLV_SERVER,
        "hls": settings.STREAMING_HLS_SERVER,
        "whip": settings.STREAMING_WHIP_SERVER,
        "whep": settings.STREAMING_WHEP_SERVER,
        "ws": _ws(settings.PUBLIC_URL) + "/api/v1/live/ws",
    }


def this_node_urls() -> dict[str, str]:
    """This media node's public bases, sent in its heartbeat."""
    http = settings.MEDIA_PUBLIC_HTTP
    if not http:
        return {**default_urls(), "rtmp": settings.MEDIA_PUBLIC_RTMP,
                "rtmp_play": settings.MEDIA_PUBLIC_RTMP if settings.MEDIA_PUBLIC_RTMP != settings.STREAMING_RTMP_SERVER
                else settings.STREAMING_RTMP_PLAY_SERVER}
    return {"rtmp": settings.MEDIA_PUBLIC_RTMP, "rtmp_play": settings.MEDIA_PUBLIC_RTMP, "flv": f"{http}/flv",
            "hls": f"{http}/hls", "whip": f"{http}/whip", "whep": f"{http}/whep", "ws": f"{_ws(http)}/api/v1/live/ws"}


def holder_urls(public_id: str) -> dict[str, str] | None:
    """The public bases of the node that holds this room's stream, if a live node does."""
    return nodes.node_urls(nodes.holder(public_id))


def room_play_urls(room: Room) -> dict[str, str]:
    public_id = room.public_id
    bases = (room.is_live and holder_urls(public_id)) or default_urls()
    urls = {
        "hls": f"{bases['hls']}/{public_id}.m3u8",
        "flv": f"{bases['flv']}/{public_id}.flv",
        "rtmp": f"{bases['rtmp_play']}/{public_id}",
        "whep": f"{bases['whep']}/{public_id}",
        "ws": f"{bases['ws']}?room_id={public_id}",
    }
    if settings.LLHLS_ENABLED:  # in memory on the node that holds the stream (404 until its first part)
        urls["llhls"] = f"{bases['hls']}/{public_id}/ll.m3u8"
    return urls


def room_ingest(room: Room) -> dict[str, str]:
    """Where the room's next publish should go: the allocated node's RTMP server; WHIP goes to
    the web host, which sends the browser on to the allocated node."""
    node = nodes.allocate(public_id=room.public_id, owner=room.owner.get_username(), kind="rtmp")
    bases = nodes.node_urls(node) or default_urls()
    return {"node": node or "", "rtmp_server": bases["rtmp"],
            "whip": f"{settings.STREAMING_WHIP_SERVER}/{room.public_id}"}


def room_push_urls(room: Room, stream_key: str) -> dict[str, str]:
    ingest = room_ingest(room)
    return {
        "rtmp_server": ingest["rtmp_server"],
        "stream_key": stream_key,
        "rtmp": f"{ingest['rtmp_server']}/{stream_key}",
        "whip": ingest["whip"],
    }
