"""HLS players as viewer sessions, though HTTP has no connection per player.

As SRS's `hls_ctx` does, a player is told an id of its own: `/hls/{room}.m3u8` without one answers
a multivariant playlist with a single variant, `{room}.m3u8?ctx={id}`, which every player (hls.js,
Safari, ffmpeg) then loads and reloads as its media playlist; the media playlist's segment URIs
carry the same `?ctx=`. So each player's requests name it: a session opens with its first
playlist (asking the control plane first: the on_play hook), counts the bytes of its segments,
and closes after `idle` seconds without a request (a player reloads its playlist every target
duration), or when staff drop it (its next request gets 403).
"""
from __future__ import annotations

import re
import secrets
import time
from typing import TYPE_CHECKING

from media.hub.viewers import PlayRefused, ViewerSession, ViewerSessions

if TYPE_CHECKING:
    from media.http_server import HttpConnection

CTX = re.compile(r"^[a-f0-9]{12}$")


class _Player:
    __slots__ = ("session", "sent", "seen", "dropped")

    def __init__(self, session: ViewerSession) -> None:
        self.session = session
        self.sent = 0
        self.seen = time.monotonic()
        self.dropped = False


def multivariant(public_id: str, ctx: str, media_playlist: str | None = None) -> bytes:
    """The entry playlist: one variant, the media playlist (`{public_id}.m3u8`, or a name relative
    to the entry's own URL, e.g. the LL playlist `ll.m3u8`) under this player's id."""
    uri = media_playlist or f"{public_id}.m3u8"
    return (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-STREAM-INF:BANDWIDTH=2000000\n"
            f"{uri}?ctx={ctx}\n").encode()


def query_ctx(query: str) -> str | None:
    """The player id in a request's query (`ctx=...`), when it is one we could have made."""
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "ctx" and CTX.match(value):
            return value
    return None


def with_ctx(playlist: bytes, ctx: str) -> bytes:
    """The media playlist with this player's id on each segment URI."""
    return playlist.replace(b".ts\n", b".ts?ctx=" + ctx.encode() + b"\n")


def ll_with_ctx(playlist: bytes, ctx: str) -> bytes:
    """The LL media playlist with this player's id on each part, preload hint, segment and init
    URI, so its media requests count as its bytes (three scans of a few KiB: about a us each)."""
    tag = b"?ctx=" + ctx.encode()
    return (playlist.replace(b'.m4s"', b".m4s" + tag + b'"').replace(b".m4s\n", b".m4s" + tag + b"\n")
            .replace(b'.mp4"', b".mp4" + tag + b'"'))


class HlsPlayers:
    def __init__(self, viewers: ViewerSessions, idle: float = 10.0) -> None:
        self.viewers = viewers
        self.idle = idle
        self._players: dict[str, _Player] = {}

    @staticmethod
    def new_ctx() -> str:
        return secrets.token_hex(6)

    def known(self, public_id: str, ctx: str) -> bool | None:
        """A playlist request of a player whose session is open: False when it was dropped; None
        when it has none yet (`playlist` opens it). Synchronous: an LL player reloads its playlist
        every part, and a request answered here costs no task."""
        player = self._players.get(ctx)
        now = time.monotonic()
        if player is None or player.session.public_id != public_id or now - player.seen > self.idle:
            return None
        player.seen = now
        return not player.dropped

    async def playlist(self, public_id: str, ctx: str, client_addr: str) -> bool:
        """A media playlist request; False when this player was dropped. Raises PlayRefused
        for a new player the control plane refuses."""
        player = self._players.get(ctx)
        now = time.monotonic()
        if player is not None and (player.session.public_id != public_id or now - player.seen > self.idle):
            self._forget(ctx, player)  # its session ended before this request (the sweep runs once a second)
            player = None
        if player is None:
            session = await self.viewers.open(public_id, "hls", client_addr, session_id=ctx)
            player = self._players[ctx] = _Player(session)
            session.sent = lambda: player.sent
            session.drop = lambda: setattr(player, "dropped", True)
        player.seen = now
        return not player.dropped

    def segment(self, ctx: str, size: int) -> bool:
        """A segment sent to this player; False when it was dropped (or is unknown: no bytes counted)."""
        player = self._players.get(ctx)
        if player is None:
            return True
        if player.dropped:
            return False
        player.seen = time.monotonic()
        player.sent += size
        return True

    async def admit(self, conn: HttpConnection, public_id: str, ctx: str) -> bool:
        """`playlist` for an HTTP request: False when refused (the hook) or dropped, answered 403."""
        try:
            allowed = await self.playlist(public_id, ctx, conn.peer)
        except PlayRefused as refused:
            conn.respond(403, f"{refused.reason}: {refused.message}\n", keep_alive=False)
            return False
        if not allowed:
            conn.respond(403, "dropped by staff\n", keep_alive=False)
        return allowed

    def sweep(self) -> None:
        """Close the sessions of players gone quiet (and forget dropped ones): run by the plane's
        stats loop, not per request, so a request costs the same however many players there are."""
        now = time.monotonic()
        for ctx, player in list(self._players.items()):
            if now - player.seen > self.idle:
                self._forget(ctx, player)

    def _forget(self, ctx: str, player: _Player) -> None:
        del self._players[ctx]
        self.viewers.close(player.session)

    def __len__(self) -> int:
        return len(self._players)
