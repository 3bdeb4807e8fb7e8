"""Serving HLS files over real sockets: segments by sendfile, byte exact, one response in flight per
connection, stalled and vanished clients closed with everything freed, HEAD and Range."""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from pathlib import Path

import pytest

from media.config import MediaConfig
from media.hls.files import HlsFiles
from media.hls.players import HlsPlayers
from media.http_server import (
    DRAINING,
    FILE_PIECE,
    HANDLING,
    BadRequest,
    MediaHttpServer,
    byte_range,
    parse_request_head,
)
from media.hub.registry import StreamRegistry
from media.hub.viewers import ViewerSessions

PLAYLIST = b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nroom/seg1.ts\n"


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: these tests need no Django."""


def kernel_send_buffer_max() -> int:
    """The most a socket's send buffer grows to (tcp_wmem's max): a file bigger than this and the
    client's receive buffer cannot be all with the kernel while the client reads nothing."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 << 20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def stale_selector_fds() -> list[int]:
    """File descriptors asyncio's loop still watches that are no longer open (a leaked callback)."""
    stale = []
    selector = getattr(asyncio.get_running_loop(), "_selector", None)  # uvloop has none (libuv's)
    for key in selector.get_map().values() if selector is not None else ():
        try:
            os.fstat(key.fd)
        except OSError:
            stale.append(key.fd)
    return stale


class Served:
    def __init__(self, server: MediaHttpServer, root: Path) -> None:
        self.server, self.root = server, root

    def segment(self, name: str, size: int) -> bytes:
        data = os.urandom(size)
        (self.root / "room").mkdir(exist_ok=True)
        (self.root / "room" / name).write_bytes(data)
        return data

    def connection(self):
        [conn] = self.server.connections
        return conn


@pytest.fixture
async def serve(tmp_path):
    """A factory: the media HTTP server with HlsFiles on tmp_path and the given settings."""
    started: list[tuple[MediaHttpServer, StreamRegistry]] = []

    async def make(players: HlsPlayers | None = None, **settings) -> Served:
        config = MediaConfig(bind="127.0.0.1", http_port=0, http_header_timeout=5.0, **settings)
        registry = StreamRegistry(config)
        server = MediaHttpServer(config, registry)
        server.add_route("/hls/", HlsFiles(tmp_path, players=players).handle)
        await server.start("127.0.0.1", 0)
        started.append((server, registry))
        (tmp_path / "room.m3u8").write_bytes(PLAYLIST)
        return Served(server, tmp_path)

    yield make
    for server, registry in started:
        registry.close_all("error")
        await server.stop()
        assert not server.connections


async def connect(port: int, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client; with `rcvbuf`, a small receive buffer so that what it does not read backs up."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock, limit=1 << 20)


def get(path: str, *headers: str, method: str = "GET") -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: x", *headers, "", ""]).encode()


async def response(reader: asyncio.StreamReader, *, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
    size = 0 if head_only else int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(size), 30)
    return int(lines[0].split()[1]), headers, body


async def until(condition, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, as a player that is killed does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_segment_byte_exact_then_keep_alive_playlist_head_and_404(serve):
    served = await serve()
    data = served.segment("seg1.ts", 3 << 20)
    reader, writer = await connect(served.server.port)
    writer.write(get("/hls/room/seg1.ts"))
    status, headers, body = await response(reader)
    assert status == 200 and body == data
    assert headers["content-type"] == "video/mp2t" and headers["cache-control"] == "public, max-age=86400"
    assert headers["content-length"] == str(len(data)) and headers["accept-ranges"] == "bytes"
    assert headers["access-control-allow-origin"] == "*" and headers["connection"] == "keep-alive"
    # the same connection after a sendfile response
    writer.write(get("/hls/room.m3u8"))
    status, headers, body = await response(reader)
    assert (status, body) == (200, PLAYLIST)
    assert headers["cache-control"] == "no-cache" and headers["content-type"] == "application/vnd.apple.mpegurl"
    writer.write(get("/hls/room/seg1.ts", method="HEAD"))
    status, headers, body = await response(reader, head_only=True)
    assert (status, headers["content-length"]) == (200, str(len(data)))
    writer.write(get("/hls/room/seg2.ts") + get("/hls/other/seg1.ts", "Connection: close"))
    for _ in range(2):
        status, headers, _ = await response(reader)
        assert status == 404 and headers["cache-control"] == "no-cache"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after the Connection: close one
    writer.close()
    assert served.server.requests == 5


async def test_pipelined_segments_are_answered_in_order_one_at_a_time(serve):
    served = await serve(viewer_drop_after=10.0)
    size = kernel_send_buffer_max() + (2 << 20)
    files = [served.segment(f"seg{i}.ts", size) for i in range(3)]
    reader, writer = await connect(served.server.port, rcvbuf=16 << 10)
    writer.write(b"".join(get(f"/hls/room/seg{i}.ts") for i in range(3)))
    await asyncio.sleep(0.5)  # the client reads nothing meanwhile
    conn = served.connection()
    # the first segment is still going out, the next ones not started; of it, nothing waits in our
    # memory with sendfile, at most one piece without (uvloop)
    assert served.server.requests == 1 and conn.state == HANDLING
    assert conn.transport.get_write_buffer_size() <= (0 if served.server.sendfile else FILE_PIECE)
    for data in files:
        status, _, body = await response(reader)
        assert status == 200 and body == data
    assert served.server.requests == 3
    writer.close()


async def test_pipelined_small_responses_wait_for_the_client_and_a_stalled_one_is_closed(serve, caplog):
    served = await serve(viewer_drop_after=0.5)
    big_playlist = PLAYLIST + b"#" * (256 << 10) + b"\n"
    (served.root / "room.m3u8").write_bytes(big_playlist)
    reader, writer = await connect(served.server.port, rcvbuf=16 << 10)
    pipelined = 200  # 50 MiB of answers, far more than the kernel's buffers
    writer.write(get("/hls/room.m3u8") * pipelined)
    conn = served.connection()
    most = 0
    with caplog.at_level(logging.INFO, logger="media.http_server"):
        while served.server.connections:
            if conn.transport is not None:
                most = max(most, conn.transport.get_write_buffer_size())
            await asyncio.sleep(0.005)
    # at most one answer waited in memory, the rest were never started
    assert conn.state != DRAINING and most <= len(big_playlist) + 1024
    assert served.server.requests < pipelined // 4
    assert [r.message for r in caplog.records if "unread" in r.message] == [
        f"media http: {conn.peer} left a response unread for 0.5 s, closing"]
    writer.close()


async def test_a_client_that_stops_reading_a_segment_is_closed_and_freed(serve, caplog):
    served = await serve(viewer_drop_after=0.3)
    served.segment("seg1.ts", kernel_send_buffer_max() + (2 << 20))
    before = open_fds()
    reader, writer = await connect(served.server.port, rcvbuf=16 << 10)
    with caplog.at_level(logging.INFO, logger="media.http_server"):
        writer.write(get("/hls/room/seg1.ts"))
        await until(lambda: not served.server.connections)
    [line] = [r.message for r in caplog.records if "took no" in r.message]
    assert line.endswith("took no 256 KiB of its file in 0.3 s, closing")
    writer.close()
    await until(lambda: open_fds() == before)
    assert not stale_selector_fds()


async def test_a_client_gone_mid_segment_frees_everything(serve):
    served = await serve()
    served.segment("seg1.ts", kernel_send_buffer_max() + (2 << 20))
    before = open_fds()
    reader, writer = await connect(served.server.port, rcvbuf=16 << 10)
    writer.write(get("/hls/room/seg1.ts"))
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(100_000)  # part of the body, then the player is killed
    assert served.server.connections
    reset(writer)
    await until(lambda: not served.server.connections)
    await until(lambda: open_fds() == before)
    assert not stale_selector_fds()


async def test_stop_while_a_segment_is_being_sent(serve):
    served = await serve()
    served.segment("seg1.ts", kernel_send_buffer_max() + (2 << 20))
    before = open_fds()
    reader, writer = await connect(served.server.port, rcvbuf=16 << 10)
    writer.write(get("/hls/room/seg1.ts"))
    await until(lambda: served.server.connections and served.connection()._sender is not None)
    await served.server.stop()
    assert not served.server.connections
    writer.close()
    await until(lambda: open_fds() == before)
    assert not stale_selector_fds()


def test_byte_range():
    def asked(value: str | None, method: str = "GET", *extra: str) -> tuple[int, int] | None:
        lines = [f"{method} /hls/room/seg1.ts HTTP/1.1", *extra] + ([f"Range: {value}"] if value else [])
        return byte_range(parse_request_head("\r\n".join(lines).encode()), 1000)

    assert asked(None) is None
    assert asked("bytes=0-99") == (0, 100)
    assert asked("bytes=900-") == (900, 100)
    assert asked("bytes=900-5000") == (900, 100)
    assert asked("bytes=-10") == (990, 10)
    assert asked("bytes=-5000") == (0, 1000)
    # the whole file: several ranges, another unit, nonsense, an invalid range, If-Range, HEAD
    for ignored in ("bytes=0-1,5-6", "items=0-1", "bytes=abc", "bytes=-", "bytes=50-10"):
        assert asked(ignored) is None, ignored
    assert asked("bytes=0-1", "GET", "If-Range: Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert asked("bytes=0-1", "HEAD") is None
    for unsatisfiable in ("bytes=1000-", "bytes=2000-3000", "bytes=-0"):
        with pytest.raises(BadRequest) as e:
            asked(unsatisfiable)
        assert e.value.status == 416


async def test_range_requests_over_the_wire(serve):
    served = await serve()
    data = served.segment("seg1.ts", 1 << 20)
    reader, writer = await connect(served.server.port)
    writer.write(get("/hls/room/seg1.ts", "Range: bytes=1000-1999"))
    status, headers, body = await response(reader)
    assert (status, body, headers["content-range"]) == (206, data[1000:2000], f"bytes 1000-1999/{len(data)}")
    writer.write(get("/hls/room/seg1.ts", "Range: bytes=-300000"))
    status, headers, body = await response(reader)
    assert (status, body) == (206, data[-300000:])
    writer.write(get("/hls/room/seg1.ts", f"Range: bytes={len(data)}-"))
    status, headers, _ = await response(reader)
    assert (status, headers["content-range"]) == (416, f"bytes */{len(data)}")
    writer.write(get("/hls/room/seg1.ts", "Range: bytes=0-1,10-20"))
    status, _, body = await response(reader)
    assert (status, body) == (200, data)
    writer.write(get("/hls/room.m3u8", "Range: bytes=0-3"))  # a playlist: always whole
    status, _, body = await response(reader)
    assert (status, body) == (200, PLAYLIST)
    writer.close()


async def test_a_players_segment_bytes_are_counted(serve):
    viewers = ViewerSessions()
    players = HlsPlayers(viewers)
    served = await serve(players=players)
    data = served.segment("seg1.ts", 500_000)
    reader, writer = await connect(served.server.port)
    writer.write(get("/hls/room.m3u8"))
    _, _, body = await response(reader)
    ctx = body.decode().split("ctx=")[1].strip()
    writer.write(get(f"/hls/room.m3u8?ctx={ctx}"))
    status, _, body = await response(reader)
    assert status == 200 and b"room/seg1.ts?ctx=" in body
    writer.write(get(f"/hls/room/seg1.ts?ctx={ctx}") + get(f"/hls/room/seg1.ts?ctx={ctx}", "Range: bytes=0-999"))
    assert (await response(reader))[2] == data
    assert (await response(reader))[2] == data[:1000]
    [session] = viewers.of_stream("room")
    assert session.sent() == len(data) + 1000
    writer.close()


async def test_the_bench_player_plays_the_live_edge_once_each_on_one_connection(serve):
    """bench/hls_players.py, which benches and the soak test use, against this server."""
    from bench.hls_players import PlayerStats, hls_player

    served = await serve()
    files = HlsFiles(served.root, players=HlsPlayers(ViewerSessions()))
    asked: list[str] = []
    peers: set[str] = set()

    async def logged(conn, req):
        asked.append(req.path)
        peers.add(conn.peer)
        await files.handle(conn, req)

    served.server.routes.clear()
    served.server.add_route("/hls/", logged)

    def playlist(first: int, last: int, ended: bool = False) -> None:
        lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:1", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
        for n in range(first, last + 1):
            lines += ["#EXTINF:1.0,", f"room/seg{n}.ts"]
        (served.root / "room.m3u8").write_text("\n".join(lines + (["#EXT-X-ENDLIST"] if ended else [])) + "\n")

    for n in range(1, 6):
        served.segment(f"seg{n}.ts", 1000 + n)
    playlist(1, 5)
    stats, stop = PlayerStats(), asyncio.Event()
    player = asyncio.create_task(hls_player(f"http://127.0.0.1:{served.server.port}/hls/room.m3u8", stop, stats))
    for n in range(6, 9):  # the stream goes on: a segment every 0.4 s, the oldest rolling off
        await asyncio.sleep(0.4)
        served.segment(f"seg{n}.ts", 1000 + n)
        playlist(n - 4, n)
    await asyncio.sleep(0.4)
    playlist(4, 8, ended=True)
    await asyncio.wait_for(player, 5)  # the playlist ended: so does the player
    segments = [p.rsplit("/", 1)[1] for p in asked if p.endswith(".ts")]
    assert segments == [f"seg{n}.ts" for n in range(3, 9)]  # the live edge (last 3), then each new one once
    assert (stats.segments, stats.bytes, stats.errors) == (6, sum(1000 + n for n in range(3, 9)), [])
    assert len(stats.fetch_times) == 6 and len(peers) == 1  # one keep-alive connection
    assert stats.playlist_fetches == len(asked) - 6 >= 3  # the entry (multivariant) and reloads
