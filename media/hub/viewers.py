"""Who watches: one `ViewerSession` per player, whatever its protocol, node-wide.

Each protocol edge opens a session when a player asks to play (RTMP `play`, an HTTP-FLV GET, a
WHEP or room-socket subscriber, an HLS player's first playlist request) and closes it when the
player goes. Opening asks the control plane first (`authorize`: the `on_play` hook when one is
set); a refusal raises `PlayRefused` and the edge answers with its protocol's own error. The
sessions are what `/api/v1/stat` lists (id, address, protocol, bytes sent) and what staff drop
by id; their ends are the `on_play_done` notifications (`ended`).

No work per packet here: a session reads its bytes from the edge (`sent`) when asked.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class PlayRefused(Exception):
    """The control plane said no to this player (e.g. the on_play hook answered non-2xx)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _nothing_sent() -> int:
    return 0


@dataclass(eq=False)
class ViewerSession:
    public_id: str
    protocol: str  # "rtmp", "flv", "hls", "webrtc"
    client_addr: str  # "ip:port" (or "ip" when the edge has no port)
    id: str = field(default_factory=lambda: secrets.token_hex(6))
    started: float = field(default_factory=time.time)
    sent: Callable[[], int] = _nothing_sent  # bytes sent to the player so far
    drop: Callable[[], None] | None = None  # close the player now (staff)
    closed: bool = False

    def describe(self) -> dict:
        return {"id": self.id, "protocol": self.protocol, "address": self.client_addr,
                "bytes_sent": self.sent(), "since": round(self.started, 3)}


Authorize = Callable[[ViewerSession], Awaitable[None]]
Ended = Callable[[ViewerSession], None]


class ViewerSessions:
    def __init__(self) -> None:
        self._by_id: dict[str, ViewerSession] = {}
        # The same sessions by stream: counts and a stream's list each second cost its own viewers,
        # not every viewer of the node.
        self._by_stream: dict[str, dict[str, ViewerSession]] = {}
        self.authorize: Authorize | None = None  # raises PlayRefused
        self.ended: Ended | None = None
        self.opened = Counter[str]()  # per protocol, since start
        self.refused = Counter[str]()  # per refusal reason
        self.bytes_sent_closed = Counter[str]()  # per protocol: bytes of the sessions that ended

    async def open(self, public_id: str, protocol: str, client_addr: str, session_id: str | None = None
                   ) -> ViewerSession:
        """A player asks to play: its session, once the control plane agrees (else PlayRefused).
        `session_id`: the id the player already carries (an HLS player's `ctx`)."""
        session = ViewerSession(public_id, protocol, client_addr)
        if session_id is not None:
            session.id = session_id
        if self.authorize is not None:
            try:
                await self.authorize(session)
            except PlayRefused as refused:
                self.refused[refused.reason] += 1
                log.info("%s %s: play of %s refused: %s", protocol, client_addr, public_id, refused.message)
                raise
        self._by_id[session.id] = session
        self._by_stream.setdefault(public_id, {})[session.id] = session
        self.opened[protocol] += 1
        return session

    def close(self, session: ViewerSession) -> None:
        """The player went (idempotent)."""
        if session.closed or self._by_id.pop(session.id, None) is None:
            return
        watching = self._by_stream.get(session.public_id, {})
        watching.pop(session.id, None)
        if not watching:
            self._by_stream.pop(session.public_id, None)
        session.closed = True
        self.bytes_sent_closed[session.protocol] += session.sent()
        if self.ended is not None:
            try:
                self.ended(session)
            except Exception:
                log.exception("viewer %s: reporting its end failed", session.id)

    def get(self, session_id: str) -> ViewerSession | None:
        return self._by_id.get(session_id)

    def of_stream(self, public_id: str) -> list[ViewerSession]:
        return list(self._by_stream.get(public_id, {}).values())

    def count(self, public_id: str) -> int:
        return len(self._by_stream.get(public_id, ()))

    def all(self) -> list[ViewerSession]:
        return list(self._by_id.values())

    def bytes_sent(self) -> Counter[str]:
        """Per protocol, every byte sent to players since start (ended sessions and open ones)."""
        total = Counter(self.bytes_sent_closed)
        for session in self._by_id.values():
            total[session.protocol] += session.sent()
        return total

    def drop(self, session_id: str) -> bool:
        """Staff: close one player now; False when no such session is open here."""
        session = self._by_id.get(session_id)
        if session is None or session.drop is None:
            return False
        log.info("%s %s: viewer %s of %s dropped by staff", session.protocol, session.client_addr, session.id,
                 session.public_id)
        session.drop()
        self.close(session)
        return True
