"""`manage.py serve`: the whole service in one process and one event loop.

Daphne serves HTTP + WebSocket (API, admin, signaling) on SERVER_PORT; the media plane (RTMP
listener, media HTTP server for FLV/HLS, and later the SFU) runs in the same asyncio loop,
which Twisted's asyncio reactor drives. With MEDIA_PLANE_ENABLED=0 it is a web/signaling
process only (production runs media nodes separately: `manage.py media_node`).
"""
from __future__ import annotations

import asyncio
import logging

from django.conf import settings
from django.core.management.base import BaseCommand

log = logging.getLogger("microvibe.serve")


class Command(BaseCommand):
    help = "Run Daphne (HTTP + WebSocket) and the media plane in one process."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--bind", default="0.0.0.0")
        parser.add_argument("--port", type=int, default=settings.SERVER_PORT)
        parser.add_argument("--no-media", action="store_true",
                            help="the web host: API, admin, room socket events; WHIP/WHEP sent on to media nodes")

    def handle(self, *args, bind: str, port: int, no_media: bool, **options) -> None:
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server  # installs Twisted's asyncio reactor
        from twisted.internet import reactor

        from microvibe.asgi import application

        with_media = settings.MEDIA_PLANE_ENABLED and not no_media
        from live.media_api import web_only_set

        # --no-media is production's web host: WHIP/WHEP offers go on to the media nodes. (With
        # MEDIA_PLANE_ENABLED=0 alone the process still takes WebRTC itself, as the SFU tests run.)
        web_only_set(no_media)
        if with_media:
            reactor.callWhenRunning(lambda: asyncio.ensure_future(_start_media_plane()))
        server = Server(
            application=application,
            endpoints=build_endpoint_description_strings(host=bind, port=port),
            ready_callable=lambda: _print_urls(port, with_media),
            verbosity=0,
        )
        server.run()


async def _start_media_plane() -> None:
    from live.media_api import media_control_register, sessions_close_orphaned
    from media.runtime import start_media_plane
    from sfu.rooms import sfu_get

    await sessions_close_orphaned()
    try:
        # One registry for every source: RTMP publishers and the SFU's WebRTC ones.
        plane = await start_media_plane(register_control=False, registry=sfu_get().registry)
        # Staff drops and recording reach every stream the registry holds, RTMP or WebRTC.
        plane.own(media_control_register(plane.node_control))
    except Exception:
        log.exception("the media plane failed to start; stopping")
        from twisted.internet import reactor

        reactor.stop()
        return
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]  # uvloop or asyncio (microvibe.event_loop)
    log.info("media plane up on %s: RTMP on :%s, media HTTP on :%s", loop, plane.rtmp_port, plane.http_port)


def _print_urls(port: int, with_media: bool) -> None:
    host = settings.PUBLIC_HOST
    lines = [
        "MicroVibe is running:",
        f"  API          http://{host}:{port}/api/v1/   (OpenAPI schema: /api/v1/schema)",
        f"  Admin        http://{host}:{port}/admin/   (create a staff user: make admin)",
        f"  Health       http://{host}:{port}/health",
        f"  Room socket  ws://{host}:{port}/api/v1/live/ws?room_id=ROOM&role=viewer",
    ]
    if with_media:
        lines += [
            f"  OBS server   {settings.STREAMING_RTMP_SERVER}   (stream key: from POST /api/v1/live/create)",
            f"  Play RTMP    {settings.STREAMING_RTMP_PLAY_SERVER}/ROOM",
            f"  Play FLV     {settings.STREAMING_FLV_SERVER}/ROOM.flv",
            f"  Play HLS     {settings.STREAMING_HLS_SERVER}/ROOM.m3u8",
            f"  WHIP / WHEP  {settings.STREAMING_WHIP_SERVER}/ROOM  /  {settings.STREAMING_WHEP_SERVER}/ROOM",
            f"  Watch page   http://{host}:{port}/live/ROOM   (publish from a browser: /live/ROOM/publish)",
        ]
    print("\n".join(lines), flush=True)
