"""Arbitrary bytes into every parser: the only exception allowed is MalformedData, and big inputs finish."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.codecs import aac, avc, opus, vp8
from media.codecs.errors import MalformedData
from tests.codecs.bits import flat_scaling_lists, make_sps
from tests.codecs.test_avc import PPS_HIGH, SPS_BASELINE, SPS_HIGH, SPS_MAIN_720

PARSERS: dict[str, Callable[[bytes], object]] = {
    "split_annexb": avc.split_annexb,
    "annexb_to_avcc": avc.annexb_to_avcc,
    **{f"split_avcc{n}": (lambda data, n=n: avc.split_avcc(data, n)) for n in (1, 2, 3, 4)},
    **{f"avcc_to_annexb{n}": (lambda data, n=n: avc.avcc_to_annexb(data, n)) for n in (1, 2, 4)},
    "nal_type": avc.nal_type,
    "nal_ref_idc": avc.nal_ref_idc,
    "decoder_config_parse": avc.decoder_config_parse,
    "decoder_config_build": lambda data: avc.decoder_config_build([data], [PPS_HIGH]),
    "decoder_config_build_pps": lambda data: avc.decoder_config_build([SPS_HIGH], [data]),
    "sps_parse": avc.sps_parse,
    "sps_parse_0x67": lambda data: avc.sps_parse(b"\x67" + data),
    "profile_level_id": avc.profile_level_id,
    "nal_scan": lambda data: (avc.has_idr(avc.split_annexb(data)), avc.parameter_sets(avc.split_annexb(data))),
    "aac_config_parse": aac.config_parse,
    "vp8_is_keyframe": vp8.is_keyframe,
    "vp8_keyframe_size": vp8.keyframe_size,
    "opus_head_parse": opus.opus_head_parse,
    "opus_head_parse_magic": lambda data: opus.opus_head_parse(b"OpusHead" + data),
}


def _only_malformed(parse: Callable[[bytes], object], data: bytes) -> None:
    try:
        parse(data)
    except MalformedData:
        pass  # anything else (IndexError, struct.error, a plain ValueError...) fails the test


@pytest.mark.parametrize("name", PARSERS)
@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(name: str, data: bytes) -> None:
    _only_malformed(PARSERS[name], data)


SEEDS = [
    SPS_BASELINE,
    SPS_MAIN_720,
    SPS_HIGH,
    make_sps(profile_idc=244, chroma_format_idc=3, scaling_lists=flat_scaling_lists(12), crop=(1, 2, 3, 4)),
    make_sps(poc_type=1, poc_cycle=(5, -7, 1 << 15), frame_mbs_only=0, vui=True),
]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), max_size=4), st.data())
def test_mutated_sps(seed: bytes, edits: list[tuple[int, int]], data: st.DataObject) -> None:
    # Real and hand-made SPS with a few bytes changed and a random cut get deep into the parser.
    sps = bytearray(seed)
    for pos, value in edits:
        sps[1 + pos % (len(sps) - 1)] = value
    sps = bytes(sps[: data.draw(st.integers(0, len(sps)))])
    for parse in (avc.sps_parse, avc.profile_level_id, lambda s: avc.decoder_config_build([s], [PPS_HIGH])):
        _only_malformed(parse, sps)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"\x00", b"\x00\x00", b"\x01", b"\x03", b"\x67", b"\x65\x88", b"\xff"]), max_size=60))
def test_zero_heavy_annexb(parts: list[bytes]) -> None:
    data = b"".join(parts)
    nals = avc.split_annexb(data)
    assert all(nals) and all(b"\x00\x00\x01" not in nal and nal[-1] != 0 for nal in nals)
    assert avc.split_avcc(avc.annexb_to_avcc(data)) == nals


MEGABYTE = random.Random(20261201).randbytes(1 << 20)


@pytest.mark.parametrize(
    "data",
    [
        MEGABYTE,
        b"\x00\x00\x01" * (1 << 18),  # empty units only
        b"\x00" * (1 << 20),
        b"\x00\x00\x01\x65" + b"\x00" * (1 << 20) + b"\x00\x00\x01\x41\x9a",  # a megabyte of trailing zeros
        b"\x00\x00\x01\x65" + MEGABYTE.replace(b"\x00\x00", b"\x00\x04"),  # one huge NAL unit
    ],
    ids=["random", "start-codes", "zeros", "zero-tail", "one-nal"],
)
def test_megabyte_split_annexb(data: bytes) -> None:
    nals = avc.split_annexb(data)
    assert all(nals)
    avc.annexb_to_avcc(data)
    avc.parameter_sets(nals)
    avc.has_idr(nals)


@pytest.mark.parametrize(
    "data",
    [
        b"\x67" + MEGABYTE,
        b"\x67" + b"\x00\x00\x03" * (1 << 18),
        b"\x67\x64\x00\x1f\xac" + b"\xff" * (1 << 20),  # huge stream of 1-bit Exp-Golomb codes
        SPS_HIGH + MEGABYTE,
        MEGABYTE,
    ],
    ids=["random", "escapes", "ones", "sps-then-junk", "random-no-header"],
)
def test_megabyte_sps_parse(data: bytes) -> None:
    for parse in (avc.sps_parse, avc.profile_level_id, avc.decoder_config_parse, aac.config_parse,
                  vp8.keyframe_size, opus.opus_head_parse, avc.split_avcc, avc.avcc_to_annexb):  # fmt: skip
        _only_malformed(parse, data)
