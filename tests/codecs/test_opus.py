"""OpusHead building and parsing, against RFC 7845 layouts and libopus' own header."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.codecs import opus
from media.codecs.errors import MalformedData
from tests.codecs.encoders import libopus_extradata


def test_opus_head_layout() -> None:
    assert opus.opus_head() == b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"
    assert opus.opus_head(1, 44100, 0) == b"OpusHead\x01\x01\x00\x00\x44\xac\x00\x00\x00\x00\x00"


@pytest.mark.parametrize("channels", [1, 2])
def test_opus_head_matches_libopus(channels: int) -> None:
    extradata = libopus_extradata(channels)
    assert opus.opus_head(channels) == extradata
    assert opus.opus_head_parse(extradata) == (channels, 48000)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([1, 2]), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFF))
def test_round_trip(channels: int, rate: int, pre_skip: int) -> None:
    assert opus.opus_head_parse(opus.opus_head(channels, rate, pre_skip)) == (channels, rate)


def _family(family: int, channels: int, streams: int, coupled: int, mapping: bytes) -> bytes:
    return (
        struct.pack("<8sBBHIhB", b"OpusHead", 1, channels, 312, 48000, 0, family) + bytes((streams, coupled)) + mapping
    )


def test_parse_multichannel_and_minor_versions() -> None:
    assert opus.opus_head_parse(_family(1, 6, 4, 2, bytes((0, 4, 1, 2, 3, 5)))) == (6, 48000)  # 5.1
    assert opus.opus_head_parse(_family(255, 3, 3, 0, b"\x00\x01\xff")) == (3, 48000)
    head = bytearray(opus.opus_head(2, 16000))
    head[8] = 0x0F  # a later minor version stays compatible
    assert opus.opus_head_parse(bytes(head) + b"extra") == (2, 16000)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        opus.opus_head()[:18],
        b"OpusTags" + opus.opus_head()[8:],
        opus.opus_head()[:8] + b"\x10" + opus.opus_head()[9:],  # major version 1
        opus.opus_head()[:9] + b"\x00" + opus.opus_head()[10:],  # 0 channels
        opus.opus_head()[:9] + b"\x03" + opus.opus_head()[10:],  # family 0 with 3 channels
        _family(1, 6, 4, 2, bytes((0, 4, 1, 2, 3))),  # mapping table truncated
        _family(1, 6, 0, 0, bytes(6)),
        _family(1, 6, 2, 3, bytes(6)),
        _family(1, 2, 1, 0, b"\x00\x01"),  # refers to stream 1 of 1
    ],
)
def test_parse_malformed(data: bytes) -> None:
    with pytest.raises(MalformedData):
        opus.opus_head_parse(data)


@pytest.mark.parametrize(
    "kwargs", [{"channels": 0}, {"channels": 3}, {"input_rate": -1}, {"input_rate": 1 << 32}, {"pre_skip": 1 << 16}]
)
def test_opus_head_misuse(kwargs: dict) -> None:
    with pytest.raises(ValueError) as excinfo:
        opus.opus_head(**kwargs)
    assert not isinstance(excinfo.value, MalformedData)
