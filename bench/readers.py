"""Lightweight viewers: N RTMP or HTTP-FLV readers in one asyncio process.

`python -m bench.readers KIND URL --count N --t0 T --t1 T --out FILE` (times are CLOCK_MONOTONIC).
Each reader logs (receive time, frame key) for every coded video frame received in [t0, t1]; the
orchestrator matches the keys with the publisher's send log for lag and counts them for fps. The
receive time is taken once per socket read, as a player would see the data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from media.codecs.flv import TAG_VIDEO
from rtmp.codec import FlvReader, VideoData

from .rtmpclient import RtmpSession, frame_key, is_coded_frame

READ_SIZE = 1 << 16


@dataclass
class ReaderLog:
    index: int
    error: str | None = None
    connected_at: float | None = None
    first_frame_at: float | None = None
    frames_total: int = 0
    bytes_total: int = 0
    frames: list[tuple[float, int]] = field(default_factory=list)  # in the window only


class Window:
    def __init__(self, t0: float, t1: float) -> None:
        self.t0, self.t1 = t0, t1

    def record(self, log: ReaderLog, now: float, payload: bytes) -> None:
        log.frames_total += 1
        if log.first_frame_at is None:
            log.first_frame_at = now
        if self.t0 <= now <= self.t1:
            log.frames.append((now, frame_key(payload)))


async def rtmp_reader(url: str, log: ReaderLog, window: Window) -> None:
    session = RtmpSession(url)
    await session.open()
    log.connected_at = time.monotonic()
    session.send(session.conn.play(session.stream_id, session.url.name))
    conn, read = session.conn, session.reader.read
    events = session.pending
    while True:
        now = time.monotonic()
        for event in events:
            if isinstance(event, VideoData) and is_coded_frame(event.payload):
                window.record(log, now, event.payload)
        if out := conn.data_to_send():  # acknowledgements, ping responses
            session.writer.write(out)
        data = await read(READ_SIZE)
        if not data:
            raise ConnectionError("server closed the stream")
        log.bytes_total += len(data)
        events = conn.receive_data(data)


class Dechunker:
    """HTTP/1.1 chunked transfer decoding, sans I/O."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._left = 0  # body bytes left in the current chunk
        self._crlf = False  # a chunk body ended; its CRLF is still to skip
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buf, out, pos = self._buf, bytearray(), 0
        buf += data
        while not self.done:
            if self._left:
                n = min(self._left, len(buf) - pos)
                out += buf[pos : pos + n]
                pos += n
                self._left -= n
                if self._left:
                    break
                self._crlf = True
            if self._crlf:
                if len(buf) - pos < 2:
                    break
                pos += 2
                self._crlf = False
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            self._left = int(bytes(buf[pos:end]).split(b";")[0], 16)
            pos = end + 2
            self.done = self._left == 0
        del buf[:pos]
        return bytes(out)


async def flv_reader(url: str, log: ReaderLog, window: Window) -> None:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
    writer.write(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: microvibe-bench\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status = head.split(" ", 2)[1]
    if status != "200":
        raise ConnectionError(f"HTTP {status}")
    log.connected_at = time.monotonic()
    dechunk = Dechunker() if "transfer-encoding: chunked" in head.lower() else None
    flv = FlvReader()
    while data := await reader.read(READ_SIZE):
        now = time.monotonic()
        log.bytes_total += len(data)
        for tag in flv.feed(dechunk.feed(data) if dechunk else data):
            if tag.tag_type == TAG_VIDEO and is_coded_frame(tag.payload):
                window.record(log, now, tag.payload)
    raise ConnectionError("server ended the stream")


KINDS = {"rtmp": rtmp_reader, "flv": flv_reader}


async def run(kind: str, url: str, count: int, first_index: int, window: Window, stop: float,
              join_step: float = 0.0) -> list[ReaderLog]:
    """Each reader joins at its index times `join_step` (plus 10 ms per reader of this process)."""
    logs = [ReaderLog(first_index + i) for i in range(count)]

    async def one(log: ReaderLog, delay: float) -> None:
        await asyncio.sleep(delay)  # stagger connects: a burst could overflow a listen backlog
        try:
            await asyncio.wait_for(KINDS[kind](url, log, window), stop - time.monotonic())
        except TimeoutError:
            pass  # the normal end: the window is over
        except Exception as error:  # noqa: BLE001 - any failure is a result to report
            log.error = f"{type(error).__name__}: {error}"

    await asyncio.gather(*(one(log, i * 0.01 + log.index * join_step) for i, log in enumerate(logs)))
    return logs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("url")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--t0", type=float, required=True)
    parser.add_argument("--t1", type=float, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--join-step", type=float, default=0.0, help="s between two readers' joins, by index")
    args = parser.parse_args()
    window = Window(args.t0, args.t1)
    logs = asyncio.run(run(args.kind, args.url, args.count, args.first_index, window, args.t1, args.join_step))
    with open(args.out, "w") as f:
        json.dump([asdict(log) for log in logs], f)


if __name__ == "__main__":
    main()
