"""The media HTTP server: routing, CORS, defensive parsing, HTTP-FLV responses."""

from __future__ import annotations

import asyncio

import pytest

from media.config import MediaConfig
from media.http_server import BadRequest, MediaHttpServer, parse_request_head
from media.hub.registry import StreamRegistry

from .conftest import audio_config, av_stream, metadata, video_config
from .test_flv_fanout import dechunk


@pytest.fixture
async def server():
    config = MediaConfig(bind="127.0.0.1", http_port=0, hub_tick_ms=5, http_header_timeout=0.3,
                         http_max_header=2048)
    registry = StreamRegistry(config)
    srv = MediaHttpServer(config, registry)
    await srv.start("127.0.0.1", 0)
    yield srv
    registry.close_all("error")
    await srv.stop()
    assert not srv.connections


async def exchange(srv: MediaHttpServer, raw: bytes, *, timeout: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(raw)
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def test_parse_request_head():
    req = parse_request_head(b"GET /flv/a.flv?x=1 HTTP/1.1\r\nHost: h\r\nConnection: close")
    assert (req.method, req.path, req.query, req.keep_alive) == ("GET", "/flv/a.flv", "x=1", False)
    for bad in (b"GET /x", b"GET x HTTP/1.1", b"GET /x HTTP/1.1\r\nno colon", b"G(T /x HTTP/1.1",
                b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b"):
        with pytest.raises(BadRequest):
            parse_request_head(bad)
    with pytest.raises(BadRequest) as e:
        parse_request_head(b"GET /x HTTP/2.0")
    assert e.value.status == 505


async def test_unknown_stream_404_and_keep_alive(server):
    raw = b"GET /flv/nope.flv HTTP/1.1\r\nHost: x\r\n\r\nGET /other HTTP/1.1\r\nConnection: close\r\n\r\n"
    data = await exchange(server, raw)
    first, second = data.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"404") and b"stream not found" in first
    assert b"Access-Control-Allow-Origin: *" in first
    assert second.startswith(b"404") and b"Connection: close" in second


async def test_methods_options_and_bad_requests(server):
    data = await exchange(server, b"POST /flv/a.flv HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 405")
    data = await exchange(server, b"OPTIONS /flv/a.flv HTTP/1.1\r\nAccess-Control-Request-Headers: range\r\n"
                                  b"Connection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 204") and b"Access-Control-Allow-Origin: *" in data
    assert b"Access-Control-Allow-Methods: GET, HEAD, OPTIONS" in data and b"Allow-Headers: range" in data
    assert (await exchange(server, b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
    assert (await exchange(server, b"GET /x HTTP/1.1\r\nX: " + b"a" * 4000 + b"\r\n\r\n")).startswith(b"HTTP/1.1 431")
    assert (await exchange(server, b"GET /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")).startswith(b"HTTP/1.1 400")
    # a client that never finishes its request is timed out
    assert (await exchange(server, b"GET /flv/a.flv HTTP/1.1\r\n")).startswith(b"HTTP/1.1 408")
    assert await exchange(server, b"") == b""


async def test_flv_stream_serves_start_then_live_and_ends(server):
    stream = server.registry.start("room1")
    for u in (metadata(), video_config(), audio_config()):
        stream.write(u)
    units = av_stream(0, 2, gop_ms=1000)
    for u in units[:40]:
        stream.write(u)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /flv/room1.flv HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert head.startswith(b"HTTP/1.1 200 OK")
    await asyncio.sleep(0.05)
    assert stream.viewer_count == 1
    for u in units[40:]:
        stream.write(u)
    await asyncio.sleep(0.05)
    server.registry.end("room1", "publisher_left")
    body = await asyncio.wait_for(reader.read(), 2)
    flv, ended = dechunk(body)
    assert ended and flv.startswith(b"FLV\x01\x05")
    writer.close()
    for _ in range(100):
        if not server.connections:
            break
        await asyncio.sleep(0.01)
    assert not server.connections


async def test_head_and_route_extension(server):
    server.registry.start("room1")
    data = await exchange(server, b"HEAD /flv/room1.flv HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200") and b"video/x-flv" in data

    def hls(conn, req):
        conn.respond(200, "#EXTM3U\n", content_type="application/vnd.apple.mpegurl", keep_alive=False)

    server.add_route("/hls/", hls)
    data = await exchange(server, b"GET /hls/room1/index.m3u8 HTTP/1.1\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"#EXTM3U\n")
