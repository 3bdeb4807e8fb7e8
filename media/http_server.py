"""The media plane's own small HTTP/1.1 server: HTTP-FLV, HLS files, /metrics.

An ASGI server hides the socket; here each viewer's transport write buffer is visible, which
is the bound of a viewer without a task or a queue (FANOUT.md). Routes are path prefixes
mapped to handlers (``add_route``): ``/flv/`` here, ``/hls/`` (media/hls/files.py), ``/metrics``.

One request at a time per connection: a request is taken only once the previous response is
all with the kernel (the transport's buffer empty), and reading stops at the first byte a client
sends meanwhile (a pipelined request) until then. So a client that does not read holds at most
one response, whatever it pipelines. A response left unread for ``VIEWER_DROP_AFTER`` s is closed
with a log line, as a stalled FLV viewer is.

Files (HLS segments) go out by ``send_file`` without being read into memory: ``os.sendfile``
from the page cache to the socket, as much as the kernel takes at once (all of a segment, for a
client that keeps up). When its buffer is full, the next ``FILE_PIECE`` bytes wait for it: by
``loop.sendfile`` on asyncio's loop (``os.sendfile`` again once the socket is writable); uvloop
has no ``loop.sendfile``, so there the piece is read (``os.pread``, page cache) and written
through the transport, once the previous one is all with the kernel (one piece in memory at
most). A client that takes no piece for ``VIEWER_DROP_AFTER`` s is closed with a log line. A
single byte range is answered 206 (``byte_range``).

``GET /flv/{public_id}.flv`` answers like nginx-http-flv's flv_live: 200, ``video/x-flv``,
chunked, CORS open, no-cache; FLV header, metadata, sequence headers, GOP cache, then live
tags; the response ends with the 0-length chunk when the publisher leaves.

Requests are parsed defensively: a bounded request head, a timeout to send it, no request
bodies (400 if one is announced), 400 on anything malformed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import unquote

from .bridges.rendition import TranscodeRefused, for_flv
from .config import MediaConfig
from .control import ControlPlane
from .flv.from_hub import CHUNKED_END, FlvFanout, FlvViewer
from .hub.registry import StreamRegistry
from .hub.viewers import PlayRefused, ViewerSession

log = logging.getLogger(__name__)

_REASONS = {
    200: "OK", 204: "No Content", 206: "Partial Content", 302: "Found", 400: "Bad Request", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
}
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_FLV_PATH = re.compile(r"^/flv/([A-Za-z0-9_\-]{1,128})\.flv$")
CORS_HEADERS = [("Access-Control-Allow-Origin", "*")]
_MAX_HEADERS = 100
# After a streamed response starts, what a client sends is read and thrown away, up to this.
_MAX_DISCARD = 64 << 10
# A file goes out in sendfile calls of this many bytes: a client that takes none in VIEWER_DROP_AFTER s
# is closed (as nginx's send_timeout, between two successive writes).
FILE_PIECE = 256 << 10
_RANGE = re.compile(r"^bytes=([0-9]{0,18})-([0-9]{0,18})$", re.I)


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class HttpRequest:
    method: str
    target: str
    path: str
    query: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn


def parse_request_head(head: bytes) -> HttpRequest:
    """Parse a request line and headers (``head`` without the final CRLF CRLF)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise BadRequest(400, "bad request line")
    method, target, version = parts
    if not _TOKEN.match(method):
        raise BadRequest(400, "bad method")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadRequest(505 if version.startswith(b"HTTP/") else 400, "bad version")
    if not target.startswith(b"/") or any(c < 0x21 or c > 0x7E for c in target):
        raise BadRequest(400, "bad target")
    if len(lines) - 1 > _MAX_HEADERS:
        raise BadRequest(431, "too many headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise BadRequest(400, "bad header line")
        try:
            text = value.strip(b" \t").decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
            raise BadRequest(400, "bad header value") from None
        if any(c in text for c in "\r\n\x00"):
            raise BadRequest(400, "bad header value")
        key = name.decode("ascii").lower()
        if key in headers and key in ("content-length", "host", "transfer-encoding"):
            raise BadRequest(400, f"duplicate {key}")
        headers[key] = text
    t = target.decode("ascii")
    path, _, query = t.partition("?")
    return HttpRequest(method.decode("ascii"), t, unquote(path), query, version.decode("ascii"), headers)


def byte_range(req: HttpRequest, size: int) -> tuple[int, int] | None:
    """(first byte, length) of the one byte range a GET asks of a ``size``-byte file.

    None sends the whole file (200), as RFC 9110 14.2 lets a server do: no Range, not a GET, an
    If-Range (we send no validators, so none can match), several ranges or a form we do not parse.
    Raises ``BadRequest(416)`` when the range starts past the end (or is an empty suffix).
    """
    value = req.headers.get("range")
    if value is None or req.method != "GET" or "if-range" in req.headers:
        return None
    m = _RANGE.match(value.replace(" ", ""))
    if m is None or (not m[1] and not m[2]):
        return None
    if not m[1]:  # the last N bytes
        suffix = int(m[2])
        if suffix == 0 or size == 0:
            raise BadRequest(416, "range not satisfiable")
        return max(0, size - suffix), min(suffix, size)
    first, last = int(m[1]), int(m[2]) if m[2] else None
    if last is not None and last < first:
        return None  # an invalid range: ignored
    if first >= size:
        raise BadRequest(416, "range not satisfiable")
    return first, (size - 1 if last is None else min(last, size - 1)) - first + 1


Handler = Callable[["HttpConnection", HttpRequest], "Awaitable[None] | None"]

# DRAINING: a response is written but not all with the kernel yet; the next request waits.
READING, HANDLING, STREAMING, CLOSED, DRAINING = range(5)


class HttpConnection(asyncio.Protocol):
    def __init__(self, server: MediaHttpServer) -> None:
        self.server = server
        self.config = server.config
        self.transport: asyncio.Transport | None = None
        self.state = READING
        self._buf = bytearray()
        self._discarded = 0
        self._timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None
        self._sender: asyncio.Task | None = None  # the task in send_file's sendfile calls
        self._write_paused = False  # the transport's buffer holds bytes (its high-water mark is 0)
        self._drained: asyncio.Future[None] | None = None  # a file piece waits for the buffer to empty
        self._fd = -1  # the socket, for os.sendfile (plain TCP only)
        self.viewer: FlvViewer | None = None
        self.viewer_session: ViewerSession | None = None
        self.peer: str = "?"

    # ------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.server.connections.add(self)
        # pause_writing as soon as bytes wait in the buffer, resume_writing once it is empty: the
        # signal that a response is all with the kernel and the next request may start.
        transport.set_write_buffer_limits(high=0)  # type: ignore[attr-defined]
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            self._fd = sock.fileno()
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        if self.state == CLOSED:
            return
        if self.state == STREAMING:
            self._discarded += len(data)
            if self._discarded > _MAX_DISCARD:
                self.close()
            return
        self._buf += data
        if self.state == READING:
            self._try_request()
            return
        assert self.transport is not None
        self.transport.pause_reading()  # a pipelined request: no more until this response is out
        if len(self._buf) > self.config.http_max_header:
            self.close()  # pipelining a lot while a handler runs: not a client we serve

    def eof_received(self) -> bool:
        # A client half-closing while its response streams is still reading: keep the socket
        # open only if something is being sent; otherwise close.
        return self.state in (HANDLING, STREAMING, DRAINING)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        self._cancel_timers()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        viewer = self.viewer
        if viewer is not None and viewer.fanout is not None:
            viewer.fanout.remove(viewer)
        self.viewer = None
        self.viewer_session_end()
        self.server.connections.discard(self)

    def viewer_session_end(self) -> None:
        session, self.viewer_session = self.viewer_session, None
        if session is not None:
            self.server.registry.viewers.close(session)

    def pause_writing(self) -> None:  # an FLV viewer's bound is polled by the hub instead
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        elif self.state == DRAINING:
            self._next_request()

    # ------------------------------------------------------------- request handling

    def _arm_timer(self) -> None:
        """The request head timeout (READING) or the unread response one (DRAINING)."""
        delay = self.config.viewer_drop_after if self.state == DRAINING else self.config.http_header_timeout
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timeout)

    def _cancel_timers(self) -> None:
        for t in (self._timer, self._abort_timer):
            if t is not None:
                t.cancel()
        self._timer = self._abort_timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if self.state == READING:
            if self._buf:
                self.respond(408, "request timeout\n", keep_alive=False)
            else:
                self.close()
        elif self.state == DRAINING:
            log.info("media http: %s left a response unread for %.1f s, closing", self.peer,
                     self.config.viewer_drop_after)
            self.abort()

    def _try_request(self) -> None:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > self.config.http_max_header:
                self.respond(431, "request head too large\n", keep_alive=False)
            return
        if end + 4 > self.config.http_max_header:
            self.respond(431, "request head too large\n", keep_alive=False)
            return
        head = bytes(self._buf[:end])
        del self._buf[: end + 4]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            # Tolerate leading empty lines between pipelined requests (RFC 9112 2.2).
            req = parse_request_head(head.lstrip(b"\r\n"))
            te = req.headers.get("transfer-encoding")
            cl = req.headers.get("content-length")
            if te is not None or (cl is not None and cl.strip() != "0"):
                raise BadRequest(400, "request bodies are not accepted")
        except BadRequest as e:
            self.respond(e.status, f"{e}\n", keep_alive=False)
            return
        self.state = HANDLING
        self.server.requests += 1
        try:
            result = self.server.dispatch(self, req)
        except Exception:
            log.exception("media http: handler failed for %s", req.path)
            self.respond(500, "internal error\n", keep_alive=False)
            return
        if inspect.isawaitable(result):
            self._task = asyncio.get_running_loop().create_task(self._run(result, req))

    async def _run(self, awaitable: Awaitable[None], req: HttpRequest) -> None:
        try:
            await awaitable
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("media http: handler failed for %s", req.path)
            if self.state == HANDLING:
                self.respond(500, "internal error\n", keep_alive=False)
        finally:
            self._task = None

    # ------------------------------------------------------------- responses

    def write_head(self, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        """The response head, and a small body in the same write (one send for both)."""
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
        lines += [f"{k}: {v}" for k, v in headers]
        assert self.transport is not None
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def respond(
        self,
        status: int,
        body: bytes | str = b"",
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: list[tuple[str, str]] | None = None,
        keep_alive: bool = True,
        head_only: bool = False,
    ) -> None:
        """A complete (non-streamed) response; keeps the connection for the next request."""
        if self.state == CLOSED or self.transport is None or self.transport.is_closing():
            return
        data = body.encode() if isinstance(body, str) else body
        h = list(headers or []) + CORS_HEADERS
        if status != 204:
            h.append(("Content-Type", content_type))
            h.append(("Content-Length", str(len(data))))
        h.append(("Connection", "keep-alive" if keep_alive else "close"))
        self.write_head(status, h, b"" if head_only else data)
        self.finish(keep_alive)

    def finish(self, keep_alive: bool) -> None:
        """A response is written: close, or take the next request once it is all with the kernel."""
        if self.state == CLOSED:
            return
        if not keep_alive:
            self.close()
        elif self._write_paused:
            self.state = DRAINING  # resume_writing goes on
            self._arm_timer()
        else:
            self._next_request()

    def _next_request(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.state = READING
        assert self.transport is not None
        self.transport.resume_reading()
        self._arm_timer()
        if self._buf:
            asyncio.get_running_loop().call_soon(self._resume_reading)

    def _resume_reading(self) -> None:
        if self.state == READING:
            self._try_request()

    async def send_file(
        self,
        file: BinaryIO,
        size: int,
        span: tuple[int, int] | None = None,
        *,
        content_type: str,
        headers: list[tuple[str, str]] | None = None,
        keep_alive: bool = True,
        head_only: bool = False,
    ) -> bool:
        """A regular file's ``size`` bytes as the response (206 with ``span``, (first, length));
        ``file`` stays the caller's to close. False when the connection was closed instead."""
        if self.state == CLOSED or self.transport is None or self.transport.is_closing():
            return False
        first, length = span if span is not None else (0, size)
        h = list(headers or []) + CORS_HEADERS + [
            ("Content-Type", content_type), ("Content-Length", str(length)), ("Accept-Ranges", "bytes")]
        if span is not None:
            h.append(("Content-Range", f"bytes {first}-{first + length - 1}/{size}"))
        h.append(("Connection", "keep-alive" if keep_alive else "close"))
        self.write_head(206 if span is not None else 200, h)
        if length and not head_only and not await self._send_pieces(file, first, length):
            return False
        self.finish(keep_alive)
        return True

    async def _send_pieces(self, file: BinaryIO, offset: int, length: int) -> bool:
        """``length`` bytes of ``file`` from ``offset``: what the kernel takes at once, then, while
        it is full, a FILE_PIECE taken within VIEWER_DROP_AFTER s at a time; False (the transport
        aborted) on a stall or an error."""
        transport, end = self.transport, offset + length
        assert transport is not None
        self._sender = asyncio.current_task()
        try:
            while offset < end:
                offset += self._sendfile_now(transport, file, offset, end - offset)
                if offset == end:
                    break
                count = min(FILE_PIECE, end - offset)
                async with asyncio.timeout(self.config.viewer_drop_after):
                    sent = await self._send_piece(transport, file, offset, count)
                if sent < count:
                    raise EOFError(f"the file ended {end - offset - sent} bytes short")
                offset += sent
            return True
        except TimeoutError:
            log.info("media http: %s took no %d KiB of its file in %.1f s, closing", self.peer,
                     FILE_PIECE >> 10, self.config.viewer_drop_after)
        except asyncio.CancelledError:
            transport.abort()
            raise
        except (OSError, EOFError, RuntimeError) as exc:  # the client went away, or the file shrank
            log.debug("media http: sending a file to %s failed: %r", self.peer, exc)
        finally:
            self._sender = None
        transport.abort()
        return False

    def _sendfile_now(self, transport: asyncio.Transport, file: BinaryIO, offset: int, count: int) -> int:
        """What the kernel takes of the file now: os.sendfile on the (non-blocking) socket while
        nothing waits in the transport's buffer, as loop.sendfile does; 0 when it is full."""
        if self._fd < 0 or transport.get_write_buffer_size():
            return 0
        try:
            return os.sendfile(self._fd, file.fileno(), offset, count)
        except (BlockingIOError, InterruptedError):
            return 0

    async def _send_piece(self, transport: asyncio.Transport, file: BinaryIO, offset: int, count: int) -> int:
        loop = asyncio.get_running_loop()
        if self.server.sendfile:
            return await loop.sendfile(transport, file, offset, count)
        if self._write_paused:  # the previous piece is not all with the kernel yet
            self._drained = loop.create_future()
            try:
                await self._drained
            finally:
                self._drained = None
        data = os.pread(file.fileno(), count, offset)
        transport.write(data)
        return len(data)

    def start_stream(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Write the head of a streamed (chunked) response; the body follows from the hub."""
        self.state = STREAMING
        self._buf.clear()
        assert self.transport is not None
        self.transport.set_write_buffer_limits()  # the defaults: the hub polls the size
        self.transport.resume_reading()  # to see the client leave; what it sends is discarded
        self.write_head(status, headers + [("Transfer-Encoding", "chunked"), ("Connection", "close")])

    def end_stream(self) -> None:
        """The last chunk, then close; a viewer that never drains is aborted after a while."""
        t = self.transport
        if t is None or t.is_closing() or self.state == CLOSED:
            return
        t.write(CHUNKED_END)
        self.close()

    def abort(self) -> None:
        """Close at once. A file being sent is cancelled first: asyncio's sendfile must drop its
        writer callback while the socket is still open; the cancelled send then aborts."""
        if self._sender is not None:
            self._sender.cancel()
        elif self.transport is not None:
            self.state = CLOSED
            self.transport.abort()

    def close(self) -> None:
        t = self.transport
        if t is None or self.state == CLOSED:
            return
        if self._sender is not None:
            self.abort()
            return
        self.state = CLOSED
        viewer, self.viewer = self.viewer, None
        if viewer is not None and viewer.fanout is not None:
            viewer.fanout.remove(viewer)
        self.viewer_session_end()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if t.get_write_buffer_size() and not t.is_closing():
            t.close()
            self._abort_timer = asyncio.get_running_loop().call_later(self.config.viewer_drop_after, t.abort)
        else:
            t.close()


class HttpFlvViewer(FlvViewer):
    __slots__ = ("conn",)

    def __init__(self, conn: HttpConnection) -> None:
        super().__init__(conn.transport)
        self.conn = conn

    def stream_ended(self, reason: str) -> None:
        self.conn.viewer = None
        self.conn.end_stream()

    def dropped_slow(self) -> None:
        self.conn.viewer = None
        self.conn.state = CLOSED
        self.transport.abort()


class MediaHttpServer:
    def __init__(self, config: MediaConfig, registry: StreamRegistry, control: ControlPlane | None = None) -> None:
        self.config = config
        self.registry = registry
        self.control = control
        self.connections: set[HttpConnection] = set()
        self.routes: list[tuple[str, Handler]] = []
        self.requests = 0
        # Files by loop.sendfile (asyncio's loop), else by pieces read and written (uvloop has none).
        self.sendfile = True
        self._server: asyncio.base_events.Server | None = None
        self.port: int | None = None
        self.add_route("/flv/", self.handle_flv)

    async def holder_of(self, public_id: str) -> dict | None:
        """The public bases of the node that holds a stream this node does not (one lookup per play)."""
        if self.control is None or self.control.stream_holder is None:
            return None
        try:
            return await self.control.stream_holder(public_id=public_id)
        except Exception:
            log.exception("media http: the holder of %s could not be looked up", public_id)
            return None

    def add_route(self, prefix: str, handler: Handler) -> None:
        """Serve every path starting with ``prefix`` by ``handler(conn, request)``.

        The handler answers with ``conn.respond(...)`` (or streams with ``conn.start_stream``);
        it may be a coroutine function. OPTIONS (CORS preflight) is answered before handlers.
        """
        self.routes.append((prefix, handler))
        self.routes.sort(key=lambda r: len(r[0]), reverse=True)

    def dispatch(self, conn: HttpConnection, req: HttpRequest) -> Awaitable[None] | None:
        if req.method == "OPTIONS":
            asked = req.headers.get("access-control-request-headers")
            h = [
                ("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS"),
                ("Access-Control-Max-Age", "86400"),
            ]
            if asked:
                h.append(("Access-Control-Allow-Headers", asked))
            conn.respond(204, headers=h, keep_alive=req.keep_alive)
            return None
        for prefix, handler in self.routes:
            if req.path.startswith(prefix):
                return handler(conn, req)
        conn.respond(404, "not found\n", keep_alive=req.keep_alive)
        return None

    # ------------------------------------------------------------- HTTP-FLV

    async def handle_flv(self, conn: HttpConnection, req: HttpRequest) -> None:
        if req.method not in ("GET", "HEAD"):
            conn.respond(405, "method not allowed\n", headers=[("Allow", "GET, HEAD, OPTIONS")], keep_alive=False)
            return
        m = _FLV_PATH.match(req.path)
        if m is None:
            conn.respond(404, "not found\n", keep_alive=req.keep_alive)
            return
        public_id = m.group(1)
        # A stream the registry holds is a live room's: playing it needs no database round trip.
        stream = self.registry.get(public_id)
        if stream is None or stream.closed:
            if holder := await self.holder_of(public_id):  # another node holds it: send the player there
                query = f"?{req.query}" if req.query else ""
                conn.respond(302, "", headers=[("Location", f"{holder['flv']}/{public_id}.flv{query}")],
                             keep_alive=req.keep_alive)
                return
            conn.respond(404, "stream not found\n", keep_alive=req.keep_alive)
            return
        try:
            stream = for_flv(stream)  # a WebRTC publisher's VP8/Opus as H.264/AAC
        except TranscodeRefused as exc:
            log.warning("http-flv: play of %s refused: %s", public_id, exc)
            conn.respond(503, f"{exc}\n", headers=[("Retry-After", "30")], keep_alive=False)
            return
        headers = [
            ("Content-Type", "video/x-flv"),
            ("Cache-Control", "no-cache"),
            ("Access-Control-Allow-Origin", "*"),
        ]
        if req.method == "HEAD" or req.version == "HTTP/1.0":
            if req.method == "GET":  # chunked coding needs HTTP/1.1
                conn.respond(505, "HTTP-FLV needs HTTP/1.1\n", keep_alive=False)
                return
            conn.write_head(200, headers + [("Connection", "keep-alive" if req.keep_alive else "close")])
            conn.finish(req.keep_alive)
            return
        try:
            session = await self.registry.viewers.open(public_id, "flv", conn.peer)
        except PlayRefused as refused:
            conn.respond(403, f"{refused.reason}: {refused.message}\n", keep_alive=False)
            return
        if conn.state != HANDLING or stream.closed:
            self.registry.viewers.close(session)
            return  # the client (or the stream) went away while we were authorizing
        conn.start_stream(200, headers)
        viewer = HttpFlvViewer(conn)
        conn.viewer = viewer
        conn.viewer_session = session
        session.sent = lambda: viewer.sent
        session.drop = conn.end_stream
        stream.fanout(FlvFanout).add(viewer)

    # ------------------------------------------------------------- lifecycle

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.sendfile = isinstance(loop, asyncio.BaseEventLoop)
        self._server = await loop.create_server(lambda: HttpConnection(self), host, port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("media http: listening on %s:%d (files by os.sendfile, then %s while a socket is full)", host,
                 self.port, "loop.sendfile" if self.sendfile else "256 KiB pieces read and written")
        return self.port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self.connections):
            conn.abort()
        for _ in range(100):
            if not self.connections:
                break
            await asyncio.sleep(0.01)
        if server is not None:
            await server.wait_closed()

    @property
    def flv_viewers(self) -> int:
        return sum(1 for c in self.connections if c.viewer is not None)
