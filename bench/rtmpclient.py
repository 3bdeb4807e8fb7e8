"""A minimal asyncio RTMP client on the project's sans-I/O codec, shared by publisher and readers."""

from __future__ import annotations

import asyncio
import time
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from rtmp.codec import ClientConnection, Error, Result, Status


def frame_key(payload: bytes) -> int:
    """Identity of a video frame across publisher and readers, cheap enough for 100 readers.

    Servers forward a video message body untouched, so its length and its first and last bytes
    (NAL lengths, slice header with frame_num/POC, entropy-coded tail) tell frames apart; the same
    frame reappears only once per loop of the source, and matching takes the latest send before the
    receive. crc32, not hash(): bytes hashing is salted per process.
    """
    return (len(payload) << 32) | zlib.crc32(payload[:64] + payload[-64:])


def is_coded_frame(payload: bytes) -> bool:
    """A legacy AVC video body carrying a picture (not the sequence header / end of sequence)."""
    return len(payload) > 5 and payload[1] == 1


@dataclass(frozen=True)
class RtmpUrl:
    host: str
    port: int
    app: str
    name: str

    @classmethod
    def parse(cls, url: str) -> RtmpUrl:
        parts = urlsplit(url)
        app, _, name = parts.path.lstrip("/").partition("/")
        return cls(parts.hostname or "127.0.0.1", parts.port or 1935, app, name)

    @property
    def tc_url(self) -> str:
        return f"rtmp://{self.host}:{self.port}/{self.app}"


class RtmpSession:
    """connect + createStream over asyncio streams; then the caller publishes or plays."""

    def __init__(self, url: str) -> None:
        self.url = RtmpUrl.parse(url)
        self.conn = ClientConnection()
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self.stream_id = 0
        self.pending: list = []  # events that arrived with the reply we waited for
        self.first_send_at: float | None = None  # CLOCK_MONOTONIC just before the first RTMP byte (C0)

    def send(self, data: bytes) -> None:
        if data:
            if self.first_send_at is None:
                self.first_send_at = time.monotonic()
            self.writer.write(data)

    async def _events(self) -> list:
        data = await self.reader.read(1 << 16)
        if not data:
            raise ConnectionError("server closed the connection during setup")
        events = self.conn.receive_data(data)
        self.send(self.conn.data_to_send())
        return events

    async def _wait(self, want: type, check=lambda e: True) -> object:
        while True:
            for i, event in enumerate(events := await self._events()):
                if isinstance(event, Error):
                    raise ConnectionError(f"server refused: {event.values}")
                if isinstance(event, want) and check(event):
                    self.pending = events[i + 1 :]
                    return event

    async def open(self, chunk_size: int = 4096) -> None:
        u = self.url
        self.reader, self.writer = await asyncio.open_connection(u.host, u.port)
        self.send(self.conn.connect(u.app, u.tc_url))
        self.send(self.conn.set_chunk_size(chunk_size))  # queued until the handshake is done
        await self._wait(Result)
        self.send(self.conn.create_stream())
        result = await self._wait(Result)
        self.stream_id = int(next(v for v in result.values if isinstance(v, (int, float))))

    async def wait_status(self, code: str) -> None:
        event = await self._wait(Status, lambda e: e.info.get("code", "").startswith("NetStream."))
        if event.info.get("code") != code:
            raise ConnectionError(f"expected {code}, got {event.info}")
