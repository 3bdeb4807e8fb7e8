"""RTMP connections: handshake + chunk stream + message decoding, sans I/O.

receive_data() turns bytes into events; the methods that build messages
return the bytes to write. data_to_send() drains what the codec itself must
send (handshake replies, acknowledgements, ping responses).
"""

from __future__ import annotations

import math
import struct
from typing import Any

from . import amf0
from .chunk import MAX_CHUNK_SIZE, ChunkParser, ChunkWriter, RawMessage
from .errors import LocalProtocolError, RemoteProtocolError
from .handshake import ClientHandshake, ServerHandshake
from .message import (
    ACK,
    AGGREGATE,
    AUDIO,
    COMMAND_AMF0,
    COMMAND_AMF3,
    CSID_COMMAND,
    CSID_CONTROL,
    CSID_DATA,
    DATA_AMF0,
    DATA_AMF3,
    LIMIT_DYNAMIC,
    PING_REQUEST,
    PING_RESPONSE,
    SET_BUFFER_LENGTH,
    SET_CHUNK_SIZE,
    SET_PEER_BANDWIDTH,
    USER_CONTROL,
    VIDEO,
    WINDOW_ACK_SIZE,
    AudioData,
    CloseStream,
    Connect,
    ConnectionClosed,
    CreateStream,
    DataMessage,
    DeleteStream,
    Error,
    FCPublish,
    FCUnpublish,
    Metadata,
    OtherCommand,
    Play,
    Publish,
    ReleaseStream,
    Result,
    Status,
    UserControl,
    VideoData,
)

_U32 = struct.Struct(">I")
_MASK = 0xFFFFFFFF


# --- decoding messages into events -------------------------------------------


def _str_arg(args: list, i: int, default: str = "") -> str:
    value = args[i] if len(args) > i else None
    return value if isinstance(value, str) else default


def _num_arg(args: list, i: int, default: float) -> float:
    value = args[i] if len(args) > i else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return default


def _int_arg(args: list, i: int) -> int:
    return int(_num_arg(args, i, 0.0)) & _MASK


def _command_event(name: str, tid: float, stream_id: int, args: list) -> Any:
    """args are the values after the transaction id (args[0]: command object)."""
    if name == "connect":
        props = args[0] if args and isinstance(args[0], dict) else {}
        return Connect(tid, _str_arg([props.get("app")], 0), _str_arg([props.get("tcUrl")], 0), props)
    if name == "releaseStream":
        return ReleaseStream(tid, _str_arg(args, 1))
    if name == "FCPublish":
        return FCPublish(tid, _str_arg(args, 1))
    if name == "FCUnpublish":
        return FCUnpublish(tid, _str_arg(args, 1))
    if name == "createStream":
        return CreateStream(tid)
    if name == "publish":
        return Publish(tid, stream_id, _str_arg(args, 1), _str_arg(args, 2, "live"))
    if name == "play":
        return Play(tid, stream_id, _str_arg(args, 1), _num_arg(args, 2, -2.0))
    if name == "deleteStream":
        return DeleteStream(tid, _int_arg(args, 1))
    if name == "closeStream":
        return CloseStream(stream_id)
    if name == "_result":
        return Result(tid, args)
    if name == "_error":
        return Error(tid, args)
    if name == "onStatus":
        info = next((a for a in args if isinstance(a, dict)), {})
        return Status(stream_id, info)
    return OtherCommand(name, tid, stream_id, args)


def _strip_amf3(msg: RawMessage) -> bytes:
    # AMF3 command/data messages start with a format selector byte (0 = AMF0 follows).
    if msg.msg_type in (COMMAND_AMF3, DATA_AMF3) and msg.payload[:1] == b"\x00":
        return msg.payload[1:]
    return msg.payload


def _decode_command(msg: RawMessage) -> Any:
    values = amf0.decode_all(_strip_amf3(msg))
    if not values or not isinstance(values[0], str):
        raise RemoteProtocolError("command message without a name")
    tid = _num_arg(values, 1, 0.0)
    return _command_event(values[0], tid, msg.stream_id, values[2:])


def _decode_data(msg: RawMessage) -> Any:
    payload = _strip_amf3(msg)
    values = amf0.decode_all(payload)
    if values and values[0] == "@setDataFrame":
        values = values[1:]
    if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
        meta = values[1]
        try:
            body = amf0.encode("onMetaData", amf0.EcmaArray(meta))
        except LocalProtocolError as exc:  # e.g. a key that grew past 64 KiB via U+FFFD
            raise RemoteProtocolError(f"cannot re-encode onMetaData: {exc}") from exc
        return Metadata(msg.stream_id, msg.timestamp, meta, body)
    if values and isinstance(values[0], str):
        return DataMessage(msg.stream_id, msg.timestamp, values[0], values[1:], payload)
    return None


def _split_aggregate(msg: RawMessage) -> list[RawMessage]:
    """Split an aggregate message (FLV-tag-like sub-messages) and rebase timestamps."""
    data, pos, base, out = msg.payload, 0, None, []
    while pos < len(data):
        if len(data) - pos < 11:
            raise RemoteProtocolError("truncated aggregate sub-message header")
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | data[pos + 7] << 24
        end = pos + 11 + size
        if end > len(data):
            raise RemoteProtocolError("truncated aggregate sub-message body")
        base = ts if base is None else base
        stamp = (msg.timestamp + ts - base) & _MASK
        out.append(RawMessage(msg.csid, data[pos], msg.stream_id, stamp, data[pos + 11 : end]))
        pos = end + 4  # skip the back pointer
    return out


# --- connections ---------------------------------------------------------------


class _Connection:
    def __init__(self, handshake: ServerHandshake | ClientHandshake, max_message_size: int) -> None:
        self._handshake = handshake
        self._parser = ChunkParser(max_message_size)
        self._writer = ChunkWriter()
        self._out = bytearray()
        self._failed = False
        self._closed = False
        self.bytes_received = 0
        self.peer_window_ack_size = 0  # 0: the peer did not ask for acknowledgements
        self._acked_at = 0
        self.peer_acked = 0  # last sequence number the peer acknowledged
        self.peer_bandwidth = 0
        self.buffer_lengths: dict[int, int] = {}  # stream id -> client buffer (ms)

    @property
    def out_chunk_size(self) -> int:
        return self._writer.chunk_size

    @property
    def handshake_done(self) -> bool:
        return self._handshake.done

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list:
        """Feed received bytes (b"" means EOF) and return the resulting events."""
        if self._failed:
            raise RemoteProtocolError("connection is in an error state")
        if self._closed:
            if data:
                raise LocalProtocolError("data received after EOF")
            return []
        if not data:
            self._closed = True
            return [ConnectionClosed()]
        try:
            return self._receive(data)
        except RemoteProtocolError:
            self._failed = True
            raise

    def _receive(self, data: bytes) -> list:
        self.bytes_received += len(data)
        if not self._handshake.done:
            self._handshake.receive_data(data)
            self._out += self._handshake.data_to_send()
            if not self._handshake.done:
                return []
            data = self._handshake.leftover
            self._on_handshake_done()
        events: list = []
        for msg in self._parser.feed(data):
            self._dispatch(msg, events)
        self._maybe_ack()
        return events

    def _on_handshake_done(self) -> None:
        pass

    def _dispatch(self, msg: RawMessage, events: list) -> None:
        kind = msg.msg_type
        if kind == VIDEO:
            events.append(VideoData(msg.stream_id, msg.timestamp, msg.payload))
        elif kind == AUDIO:
            events.append(AudioData(msg.stream_id, msg.timestamp, msg.payload))
        elif kind in (COMMAND_AMF0, COMMAND_AMF3):
            events.append(_decode_command(msg))
        elif kind in (DATA_AMF0, DATA_AMF3):
            event = _decode_data(msg)
            if event is not None:
                events.append(event)
        elif kind == AGGREGATE:
            for sub in _split_aggregate(msg):
                if sub.msg_type in (AUDIO, VIDEO, DATA_AMF0):
                    self._dispatch(sub, events)
        elif kind <= SET_PEER_BANDWIDTH:
            self._control(msg, events)
        # other types (shared objects, unknown) are ignored

    def _control(self, msg: RawMessage, events: list) -> None:
        # Set Chunk Size and Abort were already applied by the chunk parser.
        kind, body = msg.msg_type, msg.payload
        if kind in (ACK, WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH):
            if len(body) < 4:
                raise RemoteProtocolError(f"control message type {kind} too short")
            value = _U32.unpack_from(body)[0]
            if kind == ACK:
                self.peer_acked = value
            elif kind == WINDOW_ACK_SIZE:
                self.peer_window_ack_size = value
            else:
                self.peer_bandwidth = value
        elif kind == USER_CONTROL:
            self._user_control(body, events)

    def _user_control(self, body: bytes, events: list) -> None:
        if len(body) < 2:
            raise RemoteProtocolError("user control message too short")
        event_type = int.from_bytes(body[:2], "big")
        arg = _U32.unpack_from(body, 2)[0] if len(body) >= 6 else 0
        if event_type == PING_REQUEST:
            self._out += self._control_message(USER_CONTROL, struct.pack(">HI", PING_RESPONSE, arg))
        elif event_type == SET_BUFFER_LENGTH:
            if len(body) >= 10 and len(self.buffer_lengths) < 1024:
                self.buffer_lengths[arg] = _U32.unpack_from(body, 6)[0]
        elif event_type <= 4:
            events.append(UserControl(event_type, arg))

    def _maybe_ack(self) -> None:
        window = self.peer_window_ack_size
        if window and self.bytes_received - self._acked_at >= window:
            self._acked_at = self.bytes_received
            self._out += self._control_message(ACK, _U32.pack(self.bytes_received & _MASK))

    # --- building messages ---

    def _control_message(self, msg_type: int, body: bytes) -> bytes:
        return self._writer.send(RawMessage(CSID_CONTROL, msg_type, 0, 0, body))

    def _command_message(self, csid: int, stream_id: int, *values: Any) -> bytes:
        return self._writer.send(RawMessage(csid, COMMAND_AMF0, stream_id, 0, amf0.encode(*values)))

    def _announce_chunk_size(self, n: int) -> bytes:
        # The Set Chunk Size message itself still travels with the old size.
        if not 1 <= n <= MAX_CHUNK_SIZE:
            raise LocalProtocolError(f"chunk size {n} out of range 1..{MAX_CHUNK_SIZE}")
        out = self._control_message(SET_CHUNK_SIZE, _U32.pack(n))
        self._writer.set_chunk_size(n)
        return out

    def send_message(self, csid: int, msg_type: int, stream_id: int, timestamp: int, payload: bytes) -> bytes:
        """Frame any message with this connection's writer (header compression, chunk size)."""
        return self._writer.send(RawMessage(csid, msg_type, stream_id, timestamp, payload))

    def user_control(self, event_type: int, stream_id: int) -> bytes:
        """Stream Begin / EOF / Dry / IsRecorded for stream_id."""
        return self._control_message(USER_CONTROL, struct.pack(">HI", event_type, stream_id))


class ServerConnection(_Connection):
    """Server side of one RTMP connection."""

    def __init__(self, *, max_message_size: int = 8 << 20, window_ack_size: int = 2_500_000) -> None:
        super().__init__(ServerHandshake(), max_message_size)
        self.window_ack_size = window_ack_size

    def accept_connect(
        self, transaction_id: float, *, chunk_size: int = 4096, peer_bandwidth: int = 2_500_000
    ) -> bytes:
        """Window Ack Size, Set Peer Bandwidth, Set Chunk Size, then the connect _result."""
        out = self._control_message(WINDOW_ACK_SIZE, _U32.pack(self.window_ack_size))
        out += self._control_message(SET_PEER_BANDWIDTH, _U32.pack(peer_bandwidth) + bytes((LIMIT_DYNAMIC,)))
        out += self._announce_chunk_size(chunk_size)
        properties = {"fmsVer": "FMS/3,0,1,123", "capabilities": 31}
        info = {
            "level": "status",
            "code": "NetConnection.Connect.Success",
            "description": "Connection succeeded.",
            "objectEncoding": 0,
        }
        return out + self._command_message(CSID_COMMAND, 0, "_result", transaction_id, properties, info)

    def reject_connect(self, transaction_id: float, description: str) -> bytes:
        info = {
            "level": "error",
            "code": "NetConnection.Connect.Rejected",
            "description": description,
        }
        return self._command_message(CSID_COMMAND, 0, "_error", transaction_id, None, info)

    def result(self, transaction_id: float, *values: Any) -> bytes:
        return self._command_message(CSID_COMMAND, 0, "_result", transaction_id, *values)

    def create_stream_result(self, transaction_id: float, stream_id: int) -> bytes:
        return self.result(transaction_id, None, float(stream_id))

    def on_status(self, stream_id: int, *, level: str, code: str, description: str) -> bytes:
        info = {"level": level, "code": code, "description": description}
        return self._command_message(CSID_DATA, stream_id, "onStatus", 0, None, info)

    def sample_access(self, stream_id: int) -> bytes:
        body = amf0.encode("|RtmpSampleAccess", True, True)
        return self._writer.send(RawMessage(CSID_DATA, DATA_AMF0, stream_id, 0, body))


CSID_STREAM_COMMAND = 8  # ffmpeg sends publish/play on its "source channel" 8
CSID_CLIENT_AUDIO = 4
CSID_CLIENT_VIDEO = 6


class ClientConnection(_Connection):
    """A small RTMP client: enough for tests, relays and load generators.

    Messages built before the handshake completes are queued and come out of
    data_to_send() right after C2.
    """

    def __init__(self, *, digest_handshake: bool = False, max_message_size: int = 8 << 20) -> None:
        super().__init__(ClientHandshake(digest=digest_handshake), max_message_size)
        self._started = False
        self._pending = bytearray()
        self._next_tid = 1
        self.last_transaction_id = 0.0

    def receive_data(self, data: bytes) -> list:
        if not self._started:
            raise LocalProtocolError("call connect() before receiving data")
        return super().receive_data(data)

    def _on_handshake_done(self) -> None:
        self._out += self._pending
        self._pending.clear()

    def _emit(self, data: bytes) -> bytes:
        if self._handshake.done:
            return data
        self._pending += data
        return b""

    def command(self, name: str, *args: Any, stream_id: int = 0, csid: int = CSID_COMMAND) -> bytes:
        """Send `name` with a fresh transaction id (see last_transaction_id)."""
        tid = float(self._next_tid)
        self._next_tid += 1
        self.last_transaction_id = tid
        return self._emit(self._command_message(csid, stream_id, name, tid, *args))

    def connect(self, app: str, tc_url: str, **properties: Any) -> bytes:
        """Start the handshake (returns C0+C1); the connect command follows the handshake."""
        if self._started:
            raise LocalProtocolError("connect() already called")
        self._started = True
        props = {
            "app": app,
            "type": "nonprivate",
            "flashVer": "FMLE/3.0 (compatible; MicroVibe)",
            "tcUrl": tc_url,
        }
        props.update(properties)
        self.command("connect", props)
        return self._handshake.data_to_send()

    def create_stream(self) -> bytes:
        return self.command("createStream", None)

    def publish(self, stream_id: int, name: str, publish_type: str = "live") -> bytes:
        return self.command("publish", None, name, publish_type, stream_id=stream_id, csid=CSID_STREAM_COMMAND)

    def play(self, stream_id: int, name: str, start: float = -2.0) -> bytes:
        out = self.command("play", None, name, start, stream_id=stream_id, csid=CSID_STREAM_COMMAND)
        buffer = struct.pack(">HII", SET_BUFFER_LENGTH, stream_id, 3000)  # as ffmpeg does
        return out + self._emit(self._control_message(USER_CONTROL, buffer))

    def delete_stream(self, stream_id: int) -> bytes:
        return self.command("deleteStream", None, float(stream_id))

    def set_chunk_size(self, n: int) -> bytes:
        return self._emit(self._announce_chunk_size(n))

    def metadata(self, stream_id: int, values: dict, timestamp: int = 0) -> bytes:
        """@setDataFrame onMetaData, as encoders send it."""
        body = amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray(values))
        return self.send_message(CSID_CLIENT_AUDIO, DATA_AMF0, stream_id, timestamp, body)

    def send_message(self, csid: int, msg_type: int, stream_id: int, timestamp: int, payload: bytes) -> bytes:
        return self._emit(super().send_message(csid, msg_type, stream_id, timestamp, payload))
