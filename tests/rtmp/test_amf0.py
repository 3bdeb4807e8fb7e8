"""AMF0: spec byte fixtures, round trips, malformed input."""

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmp.codec import amf0
from rtmp.codec.amf0 import EcmaArray
from rtmp.codec.errors import LocalProtocolError, RemoteProtocolError

# connect(1, {app: "live"}) as ffmpeg encodes it, written out from the AMF0 spec.
CONNECT_BYTES = (
    b"\x02\x00\x07connect"
    + b"\x00" + struct.pack(">d", 1.0)
    + b"\x03" + b"\x00\x03app" + b"\x02\x00\x04live" + b"\x00\x00\x09"
)  # fmt: skip


def test_known_connect_encoding():
    assert amf0.encode("connect", 1, {"app": "live"}) == CONNECT_BYTES
    assert amf0.decode_all(CONNECT_BYTES) == ["connect", 1.0, {"app": "live"}]


def test_scalars():
    assert amf0.encode(None, True, False) == b"\x05\x01\x01\x01\x00"
    assert amf0.encode(2.5) == b"\x00" + struct.pack(">d", 2.5)
    assert amf0.decode_all(b"\x06\x05") == [None, None]  # undefined, null


def test_ecma_array_and_strict_array():
    data = amf0.encode(EcmaArray(width=1280.0), [1, "a"])
    assert data[0] == 0x08 and data[1:5] == b"\x00\x00\x00\x01"
    assert amf0.decode_all(data) == [{"width": 1280.0}, [1.0, "a"]]


def test_ecma_array_without_end_marker_at_eof():
    data = b"\x08\x00\x00\x00\x01\x00\x01a\x00" + struct.pack(">d", 1.0)
    assert amf0.decode_all(data) == [{"a": 1.0}]


def test_long_string():
    text = "x" * 70000
    data = amf0.encode(text)
    assert data[0] == 0x0C
    assert amf0.decode_all(data) == [text]


def test_date_and_typed_object_and_xml():
    date = b"\x0b" + struct.pack(">d", 1234.0) + b"\x00\x00"
    typed = b"\x10\x00\x03Foo\x00\x01k\x05\x00\x00\x09"
    xml = b"\x0f\x00\x00\x00\x03<a>"
    assert amf0.decode_all(date + typed + xml) == [1234.0, {"k": None}, "<a>"]


def test_amf3_switch_simple_values():
    # AMF3: integer 5, string "hi", true, double 1.5, negative integer -1
    data = b"\x11\x04\x05" + b"\x11\x06\x05hi" + b"\x11\x03" + b"\x11\x05" + struct.pack(">d", 1.5)
    data += b"\x11\x04\xff\xff\xff\xff"
    assert amf0.decode_all(data) == [5, "hi", True, 1.5, -1]


def test_amf3_complex_rejected():
    with pytest.raises(RemoteProtocolError):
        amf0.decode_all(b"\x11\x0a\x0b\x01")  # AMF3 object


def test_invalid_utf8_is_replaced():
    assert amf0.decode_all(b"\x02\x00\x02\xff\xfe") == ["\ufffd\ufffd"]


@pytest.mark.parametrize(
    "data",
    [
        b"\x02\x00\x05ab",  # truncated string
        b"\x00\x01",  # truncated number
        b"\x03\x00\x01a",  # object cut inside
        b"\x0a\xff\xff\xff\xff",  # absurd strict array count
        b"\x07\x00\x00",  # reference
        b"\x04",  # movieclip
        b"\x42",  # unknown marker
        b"\x0a\x00\x00\x00\x01" * 40 + b"\x05",  # nesting too deep
    ],
)
def test_malformed(data):
    with pytest.raises(RemoteProtocolError):
        amf0.decode_all(data)


def test_encode_errors():
    with pytest.raises(LocalProtocolError):
        amf0.encode(object())
    with pytest.raises(LocalProtocolError):
        amf0.encode({1: 2})
    deep: list = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(LocalProtocolError):
        amf0.encode(deep)


amf_scalars = st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20)
amf_values = st.recursive(
    amf_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4).map(EcmaArray)
    ),
    max_leaves=20,
)


@given(st.lists(amf_values, max_size=5))
def test_round_trip(values):
    assert amf0.decode_all(amf0.encode(*values)) == values


@given(st.floats(allow_nan=True))
def test_nan_round_trip(value):
    (decoded,) = amf0.decode_all(amf0.encode(value))
    assert decoded == value or (math.isnan(value) and math.isnan(decoded))
