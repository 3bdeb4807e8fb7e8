"""AMF0 encoding/decoding (with the AMF3 switch marker tolerated for simple values)."""

from __future__ import annotations

import struct
from typing import Any

from .errors import LocalProtocolError, RemoteProtocolError

MAX_DEPTH = 32

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
NULL = 0x05
UNDEFINED = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
UNSUPPORTED = 0x0D
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10
AVMPLUS = 0x11  # switch to AMF3 for one value

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_END = b"\x00\x00\x09"


class EcmaArray(dict):
    """A dict that encodes as an AMF0 ECMA array (as onMetaData usually is)."""


# --- encoding -------------------------------------------------------------


def encode(*values: Any) -> bytes:
    """Encode values back to back as AMF0."""
    out = bytearray()
    for value in values:
        _encode_value(out, value, 0)
    return bytes(out)


def _encode_key(out: bytearray, key: Any) -> None:
    if not isinstance(key, str):
        raise LocalProtocolError(f"AMF0 object keys must be str, not {type(key).__name__}")
    raw = key.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise LocalProtocolError("AMF0 object key longer than 65535 bytes")
    out += _U16.pack(len(raw))
    out += raw


def _encode_props(out: bytearray, mapping: dict, depth: int) -> None:
    for key, item in mapping.items():
        _encode_key(out, key)
        _encode_value(out, item, depth + 1)
    out += _END


def _encode_value(out: bytearray, value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise LocalProtocolError("AMF0 value nested too deeply")
    if value is None:
        out.append(NULL)
    elif isinstance(value, bool):  # before int: bool is an int subclass
        out += bytes((BOOLEAN, 1 if value else 0))
    elif isinstance(value, (int, float)):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw))
        else:
            out.append(STRING)
            out += _U16.pack(len(raw))
        out += raw
    elif isinstance(value, EcmaArray):
        out.append(ECMA_ARRAY)
        out += _U32.pack(len(value))
        _encode_props(out, value, depth)
    elif isinstance(value, dict):
        out.append(OBJECT)
        _encode_props(out, value, depth)
    elif isinstance(value, (list, tuple)):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode_value(out, item, depth + 1)
    else:
        raise LocalProtocolError(f"cannot AMF0-encode {type(value).__name__}")


# --- decoding -------------------------------------------------------------


def decode_all(data: bytes) -> list:
    """Decode every AMF0 value in data; malformed input raises RemoteProtocolError."""
    decoder = _Decoder(bytes(data))
    values = []
    while decoder.pos < len(decoder.data):
        values.append(decoder.value(0))
    return values


class _Decoder:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise RemoteProtocolError("truncated AMF0 data")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise RemoteProtocolError("truncated AMF0 data")
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self) -> int:
        return _U16.unpack(self.take(2))[0]

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def text(self, n: int) -> str:
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise RemoteProtocolError("AMF0 value nested too deeply")
        marker = self.byte()
        handler = _HANDLERS.get(marker)
        if handler is None:
            raise RemoteProtocolError(f"unsupported AMF0 marker 0x{marker:02x}")
        return handler(self, depth)

    def props(self, target: dict, depth: int, lenient_eof: bool = False) -> dict:
        while True:
            if lenient_eof and self.pos == len(self.data):
                return target  # some encoders omit the ECMA array end marker
            key = self.text(self.u16())
            if not key and self.pos < len(self.data) and self.data[self.pos] == OBJECT_END:
                self.pos += 1
                return target
            target[key] = self.value(depth + 1)


def _number(d: _Decoder, depth: int) -> float:
    return _DOUBLE.unpack(d.take(8))[0]


def _boolean(d: _Decoder, depth: int) -> bool:
    return d.byte() != 0


def _string(d: _Decoder, depth: int) -> str:
    return d.text(d.u16())


def _long_string(d: _Decoder, depth: int) -> str:
    return d.text(d.u32())


def _object(d: _Decoder, depth: int) -> dict:
    return d.props({}, depth)


def _typed_object(d: _Decoder, depth: int) -> dict:
    d.text(d.u16())  # class name: not modelled
    return _object(d, depth)


def _ecma_array(d: _Decoder, depth: int) -> dict:
    d.u32()  # the count is only a hint; the end marker terminates
    return d.props({}, depth, lenient_eof=True)


def _strict_array(d: _Decoder, depth: int) -> list:
    count = d.u32()
    if count > len(d.data) - d.pos:  # every value takes at least one byte
        raise RemoteProtocolError("AMF0 strict array count exceeds data")
    return [d.value(depth + 1) for _ in range(count)]


def _null(d: _Decoder, depth: int) -> None:
    return None


def _reference(d: _Decoder, depth: int) -> Any:
    # Unused by RTMP peers in practice, and could build cyclic values.
    raise RemoteProtocolError("AMF0 references are not supported")


def _date(d: _Decoder, depth: int) -> float:
    millis = _DOUBLE.unpack(d.take(8))[0]
    d.take(2)  # time zone: reserved, ignored
    return millis


def _avmplus(d: _Decoder, depth: int) -> Any:
    marker = d.byte()
    if marker in (0x00, 0x01):  # undefined, null
        return None
    if marker in (0x02, 0x03):
        return marker == 0x03
    if marker == 0x04:
        value = _u29(d)
        return value - (1 << 29) if value & (1 << 28) else value
    if marker == 0x05:
        return _number(d, depth)
    if marker == 0x06:
        header = _u29(d)
        if not header & 1:
            raise RemoteProtocolError("AMF3 string references are not supported")
        return d.text(header >> 1)
    raise RemoteProtocolError(f"unsupported AMF3 marker 0x{marker:02x}")


def _u29(d: _Decoder) -> int:
    value = 0
    for _ in range(3):
        b = d.byte()
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value
    return (value << 8) | d.byte()


_HANDLERS = {
    NUMBER: _number,
    BOOLEAN: _boolean,
    STRING: _string,
    OBJECT: _object,
    NULL: _null,
    UNDEFINED: _null,
    REFERENCE: _reference,
    ECMA_ARRAY: _ecma_array,
    STRICT_ARRAY: _strict_array,
    DATE: _date,
    LONG_STRING: _long_string,
    UNSUPPORTED: _null,
    XML_DOCUMENT: _long_string,
    TYPED_OBJECT: _typed_object,
    AVMPLUS: _avmplus,
}
