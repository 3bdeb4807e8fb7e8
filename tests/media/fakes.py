"""A fake control plane (live.media_api stand-in) and RTMP client helpers for tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from media.control import ControlPlane
from rtmp.codec.connection import ClientConnection
from rtmp.codec.message import Result, Status


class FakeRefused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Grant:
    room_id: int
    public_id: str
    session_id: int
    recording: bool = False


class FakeControl:
    """Accepts key k1 for room1 (and k2 for room2). ``track_live`` refuses a second publish
    like the real control plane; without it the hub's own check must refuse."""

    def __init__(self, *, track_live: bool = True, keys: dict[str, str] | None = None) -> None:
        self.keys = keys or {"k1": "room1", "k2": "room2"}
        self.track_live = track_live
        self.live: dict[str, int] = {}
        self.next_session = 100
        self.authorize_calls: list[str] = []
        self.ended: list[dict] = []
        self.viewer_counts: list[tuple[str, int]] = []
        self.ended_event = asyncio.Event()

    async def publish_authorize(self, *, stream_key: str, protocol: str, client_addr: str = "") -> Grant:
        self.authorize_calls.append(stream_key)
        await asyncio.sleep(0.01)  # like a DB round trip
        public_id = self.keys.get(stream_key)
        if public_id is None:
            raise FakeRefused("bad_key", "unknown or rotated stream key")
        if self.track_live and public_id in self.live:
            raise FakeRefused("already_live", f"room {public_id} already has a publisher")
        self.next_session += 1
        self.live[public_id] = self.next_session
        return Grant(1, public_id, self.next_session)

    async def publish_ended(self, *, session_id: int, reason: str, bytes_received: int, peak_viewers: int) -> None:
        self.ended.append(dict(session_id=session_id, reason=reason, bytes_received=bytes_received,
                               peak_viewers=peak_viewers))
        for pid, sid in list(self.live.items()):
            if sid == session_id:
                del self.live[pid]
        self.ended_event.set()

    async def viewers_changed(self, *, public_id: str, count: int) -> None:
        self.viewer_counts.append((public_id, count))

    def plane(self) -> ControlPlane:
        return ControlPlane(
            publish_authorize=self.publish_authorize,
            publish_ended=self.publish_ended,
            viewers_changed=self.viewers_changed,
            publish_refused=FakeRefused,
        )


_PLAY_ANSWERS = ("NetStream.Play.Start", "NetStream.Play.StreamNotFound")


class RtmpTestClient:
    """A pure-Python RTMP client over asyncio streams (ClientConnection)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = ClientConnection()
        self.events: list = []
        self.eof = False

    @classmethod
    async def connect(cls, port: int, app: str = "live") -> RtmpTestClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        c = cls(reader, writer)
        writer.write(c.conn.connect(app, f"rtmp://127.0.0.1:{port}/{app}"))
        await c.until(lambda e: isinstance(e, Result))
        return c

    def send(self, data: bytes) -> None:
        self.writer.write(data + self.conn.data_to_send())

    async def pump(self, timeout: float = 2.0) -> bool:
        """Read once; False at EOF."""
        data = await asyncio.wait_for(self.reader.read(65536), timeout)
        if not data:
            self.eof = True
            return False
        self.events += self.conn.receive_data(data)
        out = self.conn.data_to_send()
        if out:
            self.writer.write(out)
        return True

    async def until(self, pred, timeout: float = 3.0):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = 0
        while True:
            for e in self.events[seen:]:
                if pred(e):
                    return e
            seen = len(self.events)
            if not await self.pump(max(0.01, deadline - loop.time())):
                raise EOFError("connection closed")

    async def create_stream(self) -> int:
        self.send(self.conn.create_stream())
        tid = self.conn.last_transaction_id
        r = await self.until(lambda e: isinstance(e, Result) and e.transaction_id == tid)
        return int(r.values[1])

    async def publish(self, key: str) -> Status:
        sid = await self.create_stream()
        self.stream_id = sid
        self.send(self.conn.publish(sid, key))
        return await self.until(
            lambda e: isinstance(e, Status) and e.info.get("code", "").startswith("NetStream.Publish")
        )

    async def play(self, name: str) -> Status:
        sid = await self.create_stream()
        self.stream_id = sid
        self.send(self.conn.play(sid, name))
        return await self.until(
            lambda e: isinstance(e, Status) and e.info.get("code") in _PLAY_ANSWERS
        )

    def statuses(self) -> list[str]:
        return [e.info.get("code") for e in self.events if isinstance(e, Status)]

    async def read_to_eof(self, timeout: float = 3.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self.pump(max(0.01, deadline - loop.time())):
            pass

    def close(self) -> None:
        self.writer.close()
