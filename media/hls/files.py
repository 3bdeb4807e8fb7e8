"""Serve the HLS directory on the media HTTP server: `/hls/{public_id}.m3u8` and its segments.

The playlist is never cached (it changes every segment); segments are immutable (their numbers
start at the epoch second, never reused), so they may be cached for long. nginx can serve
HLS_PATH directly with the same rules in production.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from media.bridges.rendition import TranscodeRefused
from media.http_server import HttpConnection, HttpRequest

_PLAYLIST = re.compile(r"^/hls/([A-Za-z0-9_\-]{1,128})\.m3u8$")
_SEGMENT = re.compile(r"^/hls/([A-Za-z0-9_\-]{1,128})/(seg[0-9]{1,20}\.ts)$")
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"


class HlsFiles:
    def __init__(self, root: Path, demand: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.root = root
        # Called with the public id on every playlist request: starts on-demand segmenting.
        self.demand = demand

    async def handle(self, conn: HttpConnection, req: HttpRequest) -> None:
        if req.method not in ("GET", "HEAD"):
            conn.respond(405, "method not allowed\n", headers=[("Allow", "GET, HEAD, OPTIONS")],
                         keep_alive=False)
            return
        if match := _PLAYLIST.match(req.path):
            path, content_type, cache = self.root / f"{match[1]}.m3u8", PLAYLIST_TYPE, "no-cache"
            if self.demand is not None:
                try:
                    await self.demand(match[1])
                except TranscodeRefused as exc:
                    conn.respond(503, f"{exc}\n", headers=[("Retry-After", "30")], keep_alive=False)
                    return
        elif match := _SEGMENT.match(req.path):
            path, content_type, cache = self.root / match[1] / match[2], SEGMENT_TYPE, "public, max-age=86400"
        else:
            conn.respond(404, "not found\n", keep_alive=req.keep_alive)
            return
        try:
            # The playlist is small; a segment is up to a few MB: read off the loop.
            body = await asyncio.get_running_loop().run_in_executor(None, path.read_bytes)
        except FileNotFoundError:
            conn.respond(404, "not found\n", headers=[("Cache-Control", "no-cache")], keep_alive=req.keep_alive)
            return
        conn.respond(200, body, content_type=content_type, headers=[("Cache-Control", cache)],
                     keep_alive=req.keep_alive, head_only=req.method == "HEAD")
