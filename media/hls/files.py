"""Serve the HLS directory on the media HTTP server: `/hls/{public_id}.m3u8` and its segments.

With `players` (the runtime's), `/hls/{id}.m3u8` is each player's entry point: a multivariant
playlist naming its media playlist under a player id (`?ctx=`), so players are counted and can be
dropped (media/hls/players.py). The media playlist and segments are the same files either way.

The playlist is never cached (it changes every segment); segments are immutable (their numbers
start at the epoch second, never reused), so they may be cached for long. nginx can serve
HLS_PATH directly with the same rules in production.

How files are served, without a thread hop or the file in memory:
- A segment goes out by `conn.send_file` (media/http_server.py): `loop.sendfile`, i.e.
  `os.sendfile` from the page cache to the socket, in pieces with a stall timeout. The open and
  fstat run on the event loop: metadata of a file the segmenter has just written (dentry and
  inode cache, a few microseconds, less than an executor round trip), as nginx's worker does.
  The segmenter writes a segment to a temp file and renames it, and removes old ones, so an
  open file is complete and stays readable until closed.
- A playlist (about 2 KB for 60 s of 2 s segments) is read on the loop too and sent from memory:
  each player's copy is rewritten with its `?ctx=`.
- HEAD gives the headers (Content-Length the file's size). A segment GET with one byte range gets
  206 (416 past the end); several ranges, or a Range on a playlist, get the whole file (200), as
  RFC 9110 allows (hls.js asks for whole segments; Safari may send a range).
"""
from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

from media.bridges.rendition import TranscodeRefused
from media.http_server import BadRequest, HttpConnection, HttpRequest, byte_range

from .players import HlsPlayers, multivariant, query_ctx, with_ctx

_PLAYLIST = re.compile(r"^/hls/([A-Za-z0-9_\-]{1,128})\.m3u8$")
_SEGMENT = re.compile(r"^/hls/([A-Za-z0-9_\-]{1,128})/(seg[0-9]{1,20}\.ts)$")
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
SEGMENT_CACHE = "public, max-age=86400"


class HlsFiles:
    def __init__(self, root: Path, demand: Callable[[str], Awaitable[None]] | None = None,
                 players: HlsPlayers | None = None, is_live: Callable[[str], bool] | None = None,
                 holder_of: Callable[[str], Awaitable[dict | None]] | None = None) -> None:
        self.root = root
        self._dir = str(root)  # paths joined as strings: cheaper than pathlib per request
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
        ctx = query_ctx(req.query)
        if match := _PLAYLIST.match(req.path):
            await self._playlist(conn, req, match[1], ctx)
        elif match := _SEGMENT.match(req.path):
            await self._segment(conn, req, os.path.join(self._dir, match[1], match[2]), ctx)
        else:
            conn.respond(404, "not found\n", keep_alive=req.keep_alive)

    async def _playlist(self, conn: HttpConnection, req: HttpRequest, public_id: str, ctx: str | None) -> None:
        if self.holder_of is not None and not self.is_live(public_id) and (holder := await self.holder_of(public_id)):
            query = f"?{req.query}" if req.query else ""
            conn.respond(302, "", headers=[("Location", f"{holder['hls']}/{public_id}.m3u8{query}")],
                         keep_alive=req.keep_alive)
            return
        if self.players is not None and ctx is None and self.is_live(public_id):  # a new player
            self._send_playlist(conn, req, multivariant(public_id, HlsPlayers.new_ctx()))
            return
        if self.demand is not None:
            try:
                await self.demand(public_id)
            except TranscodeRefused as exc:
                conn.respond(503, f"{exc}\n", headers=[("Retry-After", "30")], keep_alive=False)
                return
        body = _read(os.path.join(self._dir, f"{public_id}.m3u8"))
        if body is None:
            _not_found(conn, req)
            return
        if ctx is not None and self.players is not None:
            # A player counts from the first playlist it gets (not one that 404s while the first
            # segment is still being cut); the on_play hook is asked then.
            if self.is_live(public_id) and not await self.players.admit(conn, public_id, ctx):
                return
            body = with_ctx(body, ctx)
        self._send_playlist(conn, req, body)

    @staticmethod
    def _send_playlist(conn: HttpConnection, req: HttpRequest, body: bytes) -> None:
        conn.respond(200, body, content_type=PLAYLIST_TYPE, headers=[("Cache-Control", "no-cache")],
                     keep_alive=req.keep_alive, head_only=req.method == "HEAD")

    async def _segment(self, conn: HttpConnection, req: HttpRequest, path: str, ctx: str | None) -> None:
        file = _open(path)
        if file is None:
            _not_found(conn, req)
            return
        with file:
            size = os.fstat(file.fileno()).st_size
            try:
                span = byte_range(req, size)
            except BadRequest as e:
                conn.respond(e.status, f"{e}\n", headers=[("Content-Range", f"bytes */{size}")],
                             keep_alive=req.keep_alive)
                return
            head_only = req.method == "HEAD"
            sending = 0 if head_only else span[1] if span is not None else size
            if ctx is not None and self.players is not None and not self.players.segment(ctx, sending):
                conn.respond(403, "dropped by staff\n", keep_alive=False)
                return
            await conn.send_file(file, size, span, content_type=SEGMENT_TYPE,
                                 headers=[("Cache-Control", SEGMENT_CACHE)], keep_alive=req.keep_alive,
                                 head_only=head_only)


def _open(path: str) -> BinaryIO | None:
    """The file open for reading, None when it is not there (or not a file)."""
    try:
        return open(path, "rb", buffering=0)
    except OSError:
        return None


def _read(path: str) -> bytes | None:
    """A small file's bytes (a playlist), None when it is not there."""
    file = _open(path)
    if file is None:
        return None
    with file:
        return file.read()


def _not_found(conn: HttpConnection, req: HttpRequest) -> None:
    conn.respond(404, "not found\n", headers=[("Cache-Control", "no-cache")], keep_alive=req.keep_alive)

