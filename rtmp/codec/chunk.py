"""RTMP chunk stream layer: reassemble chunks into messages and split messages into chunks."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import LocalProtocolError, RemoteProtocolError

DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 1 << 24  # the spec allows 2**31-1; nobody needs more than 16 MiB
MAX_CSID = 65599
MAX_MESSAGE_LENGTH = 0xFFFFFF  # 24-bit length field
TIMESTAMP_MASK = 0xFFFFFFFF
EXTENDED = 0xFFFFFF

SET_CHUNK_SIZE = 1
ABORT = 2


@dataclass(frozen=True, slots=True)
class RawMessage:
    csid: int
    msg_type: int
    stream_id: int
    timestamp: int
    payload: bytes


def parse_chunk_size(payload: bytes) -> int:
    """Validate the body of a peer's Set Chunk Size message."""
    if len(payload) < 4:
        raise RemoteProtocolError("Set Chunk Size message shorter than 4 bytes")
    size = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF  # bit 31 is reserved
    if not 1 <= size <= MAX_CHUNK_SIZE:
        raise RemoteProtocolError(f"peer chunk size {size} out of range 1..{MAX_CHUNK_SIZE}")
    return size


# --- parsing ----------------------------------------------------------------


class _InStream:
    """Per-csid header state kept for header compression (fmt 1-3)."""

    __slots__ = ("timestamp", "delta", "length", "msg_type", "stream_id", "ext", "partial")

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0
        self.length = 0
        self.msg_type = 0
        self.stream_id = 0
        self.ext = False  # last fmt 0-2 header used an extended timestamp
        self.partial: bytearray | None = None  # message being reassembled


class ChunkParser:
    """Sans-I/O chunk reassembler: feed() bytes, get complete RawMessages.

    Set Chunk Size and Abort messages are applied as soon as they complete (so
    a chunk size change takes effect mid-buffer) and are returned as well.
    """

    def __init__(
        self,
        max_message_size: int = 8 << 20,
        *,
        max_open_streams: int = 64,
        max_known_streams: int = 1024,
        max_buffered: int | None = None,
    ) -> None:
        self.max_message_size = min(max_message_size, MAX_MESSAGE_LENGTH)
        self.max_open_streams = max_open_streams
        self.max_known_streams = max_known_streams
        self.max_buffered = max_buffered if max_buffered is not None else 2 * max_message_size
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._streams: dict[int, _InStream] = {}
        self._rest = b""  # an incomplete chunk header (< 18 bytes)
        self._cur: _InStream | None = None  # stream the current chunk body belongs to
        self._cur_csid = 0
        self._left = 0  # body bytes of the current chunk still expected
        self._open = 0  # messages being reassembled
        self._buffered = 0  # bytes held in partial messages
        self._failed = False

    def set_chunk_size(self, n: int) -> None:
        if not 1 <= n <= MAX_CHUNK_SIZE:
            raise LocalProtocolError(f"chunk size {n} out of range 1..{MAX_CHUNK_SIZE}")
        self.chunk_size = n

    def abort(self, csid: int) -> None:
        """Drop the partially received message on csid (Abort Message semantics)."""
        st = self._streams.get(csid)
        if st is None or st.partial is None:
            return
        self._open -= 1
        self._buffered -= len(st.partial)
        st.partial = None
        if self._cur is st:
            self._cur = None  # the rest of the current chunk body is discarded

    def feed(self, data: bytes) -> list[RawMessage]:
        if self._failed:
            raise RemoteProtocolError("chunk parser is in an error state")
        try:
            return self._feed(data)
        except RemoteProtocolError:
            self._failed = True
            raise

    def _feed(self, data: bytes) -> list[RawMessage]:
        if self._rest:
            data = self._rest + bytes(data)
        elif not isinstance(data, bytes):
            data = bytes(data)
        out: list[RawMessage] = []
        mv = memoryview(data)
        pos, n = 0, len(data)
        while pos < n:
            if self._left:
                take = min(self._left, n - pos)
                self._body(mv[pos : pos + take], out)
                pos += take
            else:
                new_pos = self._header(data, pos, n, out)
                if new_pos < 0:
                    break
                pos = new_pos
        self._rest = data[pos:]
        return out

    def _body(self, piece: memoryview, out: list[RawMessage]) -> None:
        self._left -= len(piece)
        st = self._cur
        if st is None or st.partial is None:
            return  # aborted mid-chunk
        st.partial += piece
        self._buffered += len(piece)
        if self._buffered > self.max_buffered:
            raise RemoteProtocolError("too many bytes buffered in partial messages")
        if self._left == 0 and len(st.partial) == st.length:
            payload = bytes(st.partial)
            st.partial = None
            self._open -= 1
            self._buffered -= st.length
            self._emit(out, self._cur_csid, st, payload)

    def _header(self, data: bytes, pos: int, n: int, out: list[RawMessage]) -> int:
        """Parse one chunk header at pos; return the new position or -1 if incomplete."""
        b0 = data[pos]
        fmt, csid, p = b0 >> 6, b0 & 0x3F, pos + 1
        if csid < 2:
            width = 1 if csid == 0 else 2
            if n - p < width:
                return -1
            csid = 64 + data[p] + (data[p + 1] << 8 if width == 2 else 0)
            p += width
        hlen = (11, 7, 3, 0)[fmt]
        if n - p < hlen:
            return -1
        st = self._streams.get(csid)
        if st is None:
            if fmt >= 2:
                raise RemoteProtocolError(f"chunk fmt {fmt} on new chunk stream {csid}")
            if len(self._streams) >= self.max_known_streams:
                raise RemoteProtocolError("too many chunk streams")
        ext = data[p : p + 3] == b"\xff\xff\xff" if fmt < 3 else st.ext  # type: ignore[union-attr]
        q = p + hlen
        if ext:
            if n - q < 4:
                return -1
            q += 4
        if st is None:
            st = self._streams[csid] = _InStream()
        if fmt == 3 and st.partial is not None:
            self._continue(st, csid)  # extended timestamp (if any) is a repeat: ignore it
            return q
        if st.partial is not None:
            raise RemoteProtocolError(f"chunk fmt {fmt} header inside a message on csid {csid}")
        value = int.from_bytes(data[q - 4 : q], "big") if ext else 0
        self._apply_header(st, fmt, data, p, ext, value)
        return self._start(st, csid, data, q, n, out)

    def _apply_header(self, st: _InStream, fmt: int, data: bytes, p: int, ext: bool, value: int) -> None:
        if fmt == 3:  # new message reusing everything, including the delta
            st.timestamp = (st.timestamp + st.delta) & TIMESTAMP_MASK
            return
        field = value if ext else int.from_bytes(data[p : p + 3], "big")
        st.ext = ext
        if fmt <= 1:
            st.length = int.from_bytes(data[p + 3 : p + 6], "big")
            st.msg_type = data[p + 6]
            if st.length > self.max_message_size:
                raise RemoteProtocolError(f"message of {st.length} bytes exceeds the maximum")
        if fmt == 0:
            st.stream_id = int.from_bytes(data[p + 7 : p + 11], "little")
            st.timestamp, st.delta = field, 0
        else:
            st.delta = field
            st.timestamp = (st.timestamp + field) & TIMESTAMP_MASK

    def _start(self, st: _InStream, csid: int, data: bytes, pos: int, n: int, out: list[RawMessage]) -> int:
        length = st.length
        if length <= self.chunk_size and n - pos >= length:  # fast path: one whole chunk
            self._emit(out, csid, st, data[pos : pos + length])
            return pos + length
        if self._open >= self.max_open_streams:
            raise RemoteProtocolError("too many chunk streams with a message in progress")
        self._open += 1
        st.partial = bytearray()
        self._continue(st, csid)
        return pos

    def _continue(self, st: _InStream, csid: int) -> None:
        self._cur, self._cur_csid = st, csid
        self._left = min(self.chunk_size, st.length - len(st.partial))  # type: ignore[arg-type]

    def _emit(self, out: list[RawMessage], csid: int, st: _InStream, payload: bytes) -> None:
        msg = RawMessage(csid, st.msg_type, st.stream_id, st.timestamp, payload)
        out.append(msg)
        if msg.msg_type == SET_CHUNK_SIZE:
            self.chunk_size = parse_chunk_size(payload)
        elif msg.msg_type == ABORT and len(payload) >= 4:
            self.abort(int.from_bytes(payload[:4], "big"))


# --- writing ----------------------------------------------------------------


def _basic_header(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes(((fmt << 6) | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    return bytes(((fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))


def encode_message(
    *,
    csid: int,
    fmt: int,
    timestamp: int,
    msg_type: int,
    stream_id: int,
    payload: bytes,
    chunk_size: int,
) -> bytes:
    """Frame one message as chunks.

    fmt 0: timestamp is absolute. fmt 1: timestamp is the delta from the previous
    message on csid (length and type sent, stream id inherited). fmt 2 (delta
    only) and fmt 3 (everything inherited; pass the previous delta) are accepted
    for callers that track header state themselves.
    """
    if not 2 <= csid <= MAX_CSID:
        raise LocalProtocolError(f"csid {csid} out of range 2..{MAX_CSID}")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise LocalProtocolError(f"chunk size {chunk_size} out of range")
    if not 0 <= timestamp <= TIMESTAMP_MASK:
        raise LocalProtocolError(f"timestamp {timestamp} out of 32-bit range")
    length = len(payload)
    if length > MAX_MESSAGE_LENGTH:
        raise LocalProtocolError("message longer than 16 MiB - 1")
    ext = timestamp.to_bytes(4, "big") if timestamp >= EXTENDED else b""
    field = min(timestamp, EXTENDED)
    if fmt <= 1:
        if not 0 <= msg_type <= 0xFF:
            raise LocalProtocolError(f"message type {msg_type} out of range")
        header = ((field << 32) | (length << 8) | msg_type).to_bytes(7, "big")
        if fmt == 0:
            if not 0 <= stream_id <= TIMESTAMP_MASK:
                raise LocalProtocolError(f"stream id {stream_id} out of 32-bit range")
            header += stream_id.to_bytes(4, "little")
    elif fmt == 2:
        header = field.to_bytes(3, "big")
    elif fmt == 3:
        header = b""
    else:
        raise LocalProtocolError(f"chunk fmt {fmt} is not 0..3")
    first = _basic_header(fmt, csid) + header + ext
    if length <= chunk_size:
        return first + payload
    cont = _basic_header(3, csid) + ext  # extended timestamp repeats in fmt 3 chunks
    mv = memoryview(payload)
    parts: list = [first, mv[:chunk_size]]
    for off in range(chunk_size, length, chunk_size):
        parts.append(cont)
        parts.append(mv[off : off + chunk_size])
    return b"".join(parts)


class _OutStream:
    __slots__ = ("timestamp", "delta", "length", "msg_type", "stream_id", "fmt")

    def __init__(self, msg: RawMessage, fmt: int, delta: int) -> None:
        self.timestamp = msg.timestamp
        self.delta = delta
        self.length = len(msg.payload)
        self.msg_type = msg.msg_type
        self.stream_id = msg.stream_id
        self.fmt = fmt


class ChunkWriter:
    """Frames messages, compressing headers against the previous message per csid."""

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.set_chunk_size(chunk_size)
        self._prev: dict[int, _OutStream] = {}

    def set_chunk_size(self, n: int) -> None:
        if not 1 <= n <= MAX_CHUNK_SIZE:
            raise LocalProtocolError(f"chunk size {n} out of range 1..{MAX_CHUNK_SIZE}")
        self.chunk_size = n

    def reset(self, csid: int | None = None) -> None:
        """Forget header state (for csid, or all) so the next message uses fmt 0.

        Call this if bytes for that csid were framed elsewhere (encode_message).
        """
        if csid is None:
            self._prev.clear()
        else:
            self._prev.pop(csid, None)

    def send(self, msg: RawMessage) -> bytes:
        prev = self._prev.get(msg.csid)
        fmt, value = 0, msg.timestamp
        if prev is not None and prev.stream_id == msg.stream_id and prev.timestamp <= msg.timestamp:
            value = msg.timestamp - prev.timestamp
            fmt = 1
            if prev.length == len(msg.payload) and prev.msg_type == msg.msg_type:
                # fmt 3 after fmt 0 is read differently by nginx and ffmpeg: avoid it
                fmt = 3 if prev.fmt != 0 and value == prev.delta else 2
        data = encode_message(
            csid=msg.csid,
            fmt=fmt,
            timestamp=value,
            msg_type=msg.msg_type,
            stream_id=msg.stream_id,
            payload=msg.payload,
            chunk_size=self.chunk_size,
        )
        self._prev[msg.csid] = _OutStream(msg, fmt, value if fmt else 0)
        return data
