"""Serve the HLS directory on the media HTTP server: `/hls/{public_id}.m3u8` and its segments.

With `players` (the runtime's), `/hls/{id}.m3u8` is each player's entry point: a multivariant
playlist naming its media playlist under a player id (`?ctx=`), so players are counted and can be
dropped (media/hls/players.py). The media playlist and segments are the same files either way.

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
from media.hub.viewers import PlayRefused

from .players import CTX, HlsPlayers, multivariant, with_ctx

_PLAYLIST = re.compile(r"^/hls/([A-Za-z0-9_\-]{1,128})\.m3u8$")
_SEGMENT = re.compile(r"^/hls/([A-Za-z0-9_\-]{1,128})/(seg[0-9]{1,20}\.ts)$")
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"


class HlsFiles:
    def __init__(self, root: Path, demand: Callable[[str], Awaitable[None]] | None = None,
                 players: HlsPlayers | None = None, is_live: Callable[[str], bool] | None = None,
                 holder_of: Callable[[str], Awaitable[dict | None]] | None = None) -> None:
        self.root = root
        # The public bases of the node holding a stream this node does not (None: one node).
        self.holder_of = holder_of
        # Called with the public id on every playlist request: starts on-demand segmenting.
        self.demand = demand
        # Counts players (media/hls/players.py); None: the playlist is served as it is, uncounted.
        self.players = players
        self.is_live = is_live or (lambda public_id: True)

    async def handle(self, conn: HttpConnection, req: HttpRequest) -> None:
        if req.method not in ("GET", "HEAD"):
            conn.respond(405, "method not allowed\n", headers=[("Allow", "GET, HEAD, OPTIONS")],
                         keep_alive=False)
            return
        ctx = _ctx(req.query)
        if match := _PLAYLIST.match(req.path):
            public_id = match[1]
            if self.holder_of is not None and not self.is_live(public_id) and (
                    holder := await self.holder_of(public_id)):
                query = f"?{req.query}" if req.query else ""
                conn.respond(302, "", headers=[("Location", f"{holder['hls']}/{public_id}.m3u8{query}")],
                             keep_alive=req.keep_alive)
                return
            if self.players is not None and ctx is None and self.is_live(public_id):  # a new player
                conn.respond(200, multivariant(public_id, HlsPlayers.new_ctx()), content_type=PLAYLIST_TYPE,
                             headers=[("Cache-Control", "no-cache")], keep_alive=req.keep_alive,
                             head_only=req.method == "HEAD")
                return
            path, content_type, cache = self.root / f"{public_id}.m3u8", PLAYLIST_TYPE, "no-cache"
            if self.demand is not None:
                try:
                    await self.demand(public_id)
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
        if ctx is not None and self.players is not None:
            if content_type == PLAYLIST_TYPE:
                # A player counts from the first playlist it gets (not one that 404s while the first
                # segment is still being cut); the on_play hook is asked then.
                try:
                    allowed = not self.is_live(match[1]) or await self.players.playlist(match[1], ctx, conn.peer)
                except PlayRefused as refused:
                    conn.respond(403, f"{refused.reason}: {refused.message}\n", keep_alive=False)
                    return
                body = with_ctx(body, ctx)
            else:
                allowed = self.players.segment(ctx, len(body))
            if not allowed:
                conn.respond(403, "dropped by staff\n", keep_alive=False)
                return
        conn.respond(200, body, content_type=content_type, headers=[("Cache-Control", cache)],
                     keep_alive=req.keep_alive, head_only=req.method == "HEAD")


def _ctx(query: str) -> str | None:
    """The player id in a request's query (`ctx=...`), when it is one we could have made."""
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "ctx" and CTX.match(value):
            return value
    return None
