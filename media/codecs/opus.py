"""Opus: the RFC 7845 identification header ("OpusHead"), the codec setup of Ogg, MP4, WebM and Enhanced RTMP."""

from __future__ import annotations

import struct

from .errors import MalformedData

_MAGIC = b"OpusHead"
_HEAD = struct.Struct("<8sBBHIhB")  # magic, version, channels, pre-skip, input rate, output gain, mapping family


def opus_head(channels: int = 2, input_rate: int = 48000, pre_skip: int = 312) -> bytes:
    """A 19-byte OpusHead for mapping family 0 (mono or stereo), with 0 dB output gain.

    ``input_rate`` is informational only (Opus always decodes at 48 kHz); ``pre_skip`` is in 48 kHz samples.
    """
    if channels not in (1, 2):
        raise ValueError(f"mapping family 0 allows 1 or 2 channels, not {channels}")
    if not 0 <= input_rate <= 0xFFFFFFFF:
        raise ValueError(f"input rate {input_rate} does not fit 32 bits")
    if not 0 <= pre_skip <= 0xFFFF:
        raise ValueError(f"pre-skip {pre_skip} does not fit 16 bits")
    return _HEAD.pack(_MAGIC, 1, channels, pre_skip, input_rate, 0, 0)


def opus_head_parse(data: bytes) -> tuple[int, int]:
    """(channels, input rate) of an OpusHead, of any mapping family (its table is checked, not returned)."""
    if len(data) < _HEAD.size:
        raise MalformedData(f"OpusHead too short ({len(data)} bytes)")
    magic, version, channels, _, input_rate, _, family = _HEAD.unpack_from(data)
    if magic != _MAGIC:
        raise MalformedData("not an OpusHead")
    if version >> 4:
        raise MalformedData(f"incompatible OpusHead version {version}")  # RFC 7845 5.1: major version 0 only
    if not channels:
        raise MalformedData("OpusHead with 0 channels")
    if family == 0:
        if channels > 2:
            raise MalformedData(f"mapping family 0 with {channels} channels")
    else:
        if len(data) < _HEAD.size + 2 + channels:
            raise MalformedData("OpusHead channel mapping table truncated")
        streams, coupled = data[_HEAD.size], data[_HEAD.size + 1]
        if not streams or coupled > streams or streams + coupled > 255:
            raise MalformedData(f"OpusHead with {streams} streams of which {coupled} coupled")
        table = data[_HEAD.size + 2 : _HEAD.size + 2 + channels]
        if any(index != 255 and index >= streams + coupled for index in table):
            raise MalformedData("OpusHead channel mapping refers to a missing stream")
    return channels, input_rate
