"""AudioSpecificConfig parsing and building, against hand-made bytes and FFmpeg's AAC encoder/decoder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.codecs import aac
from media.codecs.errors import MalformedData
from tests.codecs.bits import audio_specific_config as _asc
from tests.codecs.encoders import aac_decode, aac_encoder


def test_rates_table() -> None:
    assert len(aac.RATES) == 13
    assert aac.RATES[0] == 96000 and aac.RATES[3] == 48000 and aac.RATES[4] == 44100 and aac.RATES[-1] == 7350


@pytest.mark.parametrize(
    ("asc", "config"),
    [
        (b"\x12\x10", aac.AacConfig(2, 44100, 2)),
        (b"\x11\x90", aac.AacConfig(2, 48000, 2)),
        (b"\x11\x88", aac.AacConfig(2, 48000, 1)),
        (b"\x11\xb0\x56\xe5\x00", aac.AacConfig(2, 48000, 6)),  # FFmpeg's, with its SBR-absent sync extension
        (b"\x13\x88", aac.AacConfig(2, 22050, 1)),
        (b"\x2b\x92\x08\x00", aac.AacConfig(5, 22050, 2)),  # HE-AAC explicit: the core rate
        (b"\x0a\x10", aac.AacConfig(1, 44100, 2)),  # AAC Main
        (_asc(42, 3, 2), aac.AacConfig(42, 48000, 2)),  # escaped object type (USAC)
        (_asc(63 + 32, 3, 1), aac.AacConfig(95, 48000, 1)),
        (_asc(2, 15, 2, 50000), aac.AacConfig(2, 50000, 2)),  # explicit rate
        (_asc(39, 15, 1, 0xFFFFFF), aac.AacConfig(39, 0xFFFFFF, 1)),
        (_asc(2, 3, 7), aac.AacConfig(2, 48000, 8)),  # 7.1
        (_asc(2, 3, 11), aac.AacConfig(2, 48000, 7)),
        (_asc(2, 3, 13), aac.AacConfig(2, 48000, 24)),
        (_asc(2, 3, 0), aac.AacConfig(2, 48000, 0)),  # channels in a program_config_element
    ],
)
def test_config_parse(asc: bytes, config: aac.AacConfig) -> None:
    assert aac.config_parse(asc) == config
    assert aac.config_parse(bytearray(asc)) == config


@pytest.mark.parametrize(
    "asc",
    [b"", b"\x12", b"\xf8", b"\xf8\x01", _asc(2, 13, 2), _asc(2, 14, 2), _asc(2, 3, 8), _asc(2, 3, 15),
     _asc(0, 3, 2), _asc(2, 15, 2, 0), _asc(2, 15, 2, 44100)[:3], _asc(40, 3, 2)[:1]],
)  # fmt: skip
def test_config_parse_malformed(asc: bytes) -> None:
    with pytest.raises(MalformedData):
        aac.config_parse(asc)


@pytest.mark.parametrize("rate", aac.RATES)
def test_config_round_trip_all_rates(rate: int) -> None:
    for channels in (1, 2):
        asc = aac.config_build(rate, channels)
        assert len(asc) == 2
        assert aac.config_parse(asc) == aac.AacConfig(2, rate, channels)


def test_config_build_bytes() -> None:
    assert aac.config_build(44100, 2) == b"\x12\x10"
    assert aac.config_build(48000, 1) == b"\x11\x88"
    assert aac.config_build(48000, 6) == b"\x11\xb0"
    assert aac.config_build(48000, 8) == _asc(2, 3, 7)
    assert aac.config_build(50000, 2) == _asc(2, 15, 2, 50000)
    assert len(aac.config_build(50000, 2)) == 5
    assert aac.config_build(22050, 1, object_type=23) == _asc(23, 7, 1)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.sampled_from(aac.RATES), st.integers(1, (1 << 24) - 1)),
    st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 24]),
    st.sampled_from([1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23]),
)
def test_config_round_trip_property(rate: int, channels: int, object_type: int) -> None:
    assert aac.config_parse(aac.config_build(rate, channels, object_type)) == aac.AacConfig(object_type, rate, channels)


@pytest.mark.parametrize(
    ("rate", "channels", "object_type"),
    [(0, 2, 2), (1 << 24, 2, 2), (48000, 0, 2), (48000, 9, 2), (48000, 2, 5), (48000, 2, 42), (48000, 2, 0)],
)
def test_config_build_misuse(rate: int, channels: int, object_type: int) -> None:
    with pytest.raises(ValueError) as excinfo:
        aac.config_build(rate, channels, object_type)
    assert not isinstance(excinfo.value, MalformedData)


@pytest.mark.parametrize(("rate", "layout", "channels"), [(48000, "stereo", 2), (44100, "mono", 1), (22050, "5.1", 6)])
def test_ffmpeg_encoder_extradata(rate: int, layout: str, channels: int) -> None:
    extradata, packets = aac_encoder(rate, layout)
    assert aac.config_parse(extradata) == aac.AacConfig(2, rate, channels)
    # FFmpeg's config adds an explicit "no SBR" sync extension; ours is the plain 2-byte form.
    assert extradata[:2] == aac.config_build(rate, channels)
    decoded = aac_decode(aac.config_build(rate, channels), packets)
    assert len(decoded) == len(packets) and set(decoded) == {(rate, channels)}  # a frame per packet
