"""H.264 helpers on hand-made bytes: framing, configuration records, SPS fields, round-trip properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.codecs import avc
from media.codecs.errors import MalformedData
from tests.codecs.bits import flat_scaling_lists, make_sps

# x264 output (640x360 baseline, 1280x720 main, 640x360 high) and their PPS.
SPS_BASELINE = bytes.fromhex("6742c01eda0280bfe584000003000400000300f03c58ba80")
SPS_MAIN_720 = bytes.fromhex("674d401fda014016e840000003004000000f03c60ca8")
SPS_HIGH = bytes.fromhex("6764001eacb405017fcb08000003000800000301e078b175")
PPS_BASELINE = bytes.fromhex("68ce0fc8")
PPS_HIGH = bytes.fromhex("68ef0fcb")


# --- Annex B -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "nals"),
    [
        (b"\x00\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce", [b"\x67\x42", b"\x68\xce"]),
        (b"\x00\x00\x00\x00\x00\x01\x09\xf0", [b"\x09\xf0"]),  # leading_zero_8bits
        (b"\x00\x00\x01\x65\xaa\x00\x00\x00\x00\x01\x41\xbb\x00\x00", [b"\x65\xaa", b"\x41\xbb"]),  # trailing zeros
        (b"\x00\x00\x01\x00\x00\x01\x00\x00\x00\x01\x09\xf0\x00\x00\x01", [b"\x09\xf0"]),  # empty units
        (b"\xff\xfe\x00\x00\x01\x06\x05", [b"\x06\x05"]),  # junk before the first start code
        (b"\x00\x00\x01\x65\x00\x00\x03\x01\x80", [b"\x65\x00\x00\x03\x01\x80"]),  # escapes are kept
        (b"\x65\x88\x84", []),  # no start code
        (b"", []),
        (b"\x00\x00\x00\x00", []),
    ],
)
def test_split_annexb(stream: bytes, nals: list[bytes]) -> None:
    assert avc.split_annexb(stream) == nals
    assert avc.split_annexb(bytearray(stream)) == nals
    assert avc.split_annexb(memoryview(stream)) == nals
    assert all(type(nal) is bytes for nal in avc.split_annexb(bytearray(stream)))


def test_annexb_to_avcc() -> None:
    stream = b"\x00\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce\x3c\x80\x00\x00\x00\x01\x65\x88"
    assert avc.annexb_to_avcc(stream) == (
        b"\x00\x00\x00\x02\x67\x42" + b"\x00\x00\x00\x04\x68\xce\x3c\x80" + b"\x00\x00\x00\x02\x65\x88"
    )
    assert avc.annexb_to_avcc(b"") == b""


# --- AVCC ----------------------------------------------------------------------------


@pytest.mark.parametrize("length_size", [1, 2, 3, 4])
def test_split_avcc_length_sizes(length_size: int) -> None:
    nals = [b"\x67\x42\xc0", b"\x68", b"\x65" + bytes(range(200))]
    data = b"".join(len(n).to_bytes(length_size, "big") + n for n in nals)
    assert avc.split_avcc(data, length_size) == nals
    assert avc.avcc_to_annexb(data, length_size) == b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def test_split_avcc_drops_empty_units_and_accepts_buffers() -> None:
    data = bytearray(b"\x00\x00\x00\x00\x00\x00\x00\x01\x09")
    assert avc.split_avcc(data) == [b"\x09"]
    assert avc.split_avcc(memoryview(bytes(data))) == [b"\x09"]
    assert avc.avcc_to_annexb(b"") == b""
    assert avc.avcc_to_annexb(b"\x00\x00\x00\x00") == b""


@pytest.mark.parametrize(
    "data",
    [b"\x00", b"\x00\x00\x00", b"\x00\x00\x00\x05\x65\x88", b"\x00\x00\x00\x01\x09\x00\x00", b"\xff\xff\xff\xff"],
)
def test_split_avcc_truncated(data: bytes) -> None:
    with pytest.raises(MalformedData):
        avc.split_avcc(data)
    with pytest.raises(MalformedData):
        avc.avcc_to_annexb(data)


@pytest.mark.parametrize("length_size", [0, 5, -1])
def test_split_avcc_bad_length_size(length_size: int) -> None:
    for fn in (avc.split_avcc, avc.avcc_to_annexb):
        with pytest.raises(ValueError) as excinfo:
            fn(b"\x00\x01\x09", length_size)
        assert not isinstance(excinfo.value, MalformedData)


def test_avcc_to_annexb() -> None:
    data = b"\x00\x00\x00\x02\x09\xf0\x00\x00\x00\x03\x65\x88\x84"
    assert avc.avcc_to_annexb(data) == b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x65\x88\x84"


# --- NAL headers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "kind", "ref_idc"),
    [(0x67, avc.NAL_SPS, 3), (0x68, avc.NAL_PPS, 3), (0x65, avc.NAL_IDR, 3), (0x41, avc.NAL_SLICE, 2),
     (0x01, avc.NAL_SLICE, 0), (0x06, avc.NAL_SEI, 0), (0x09, avc.NAL_AUD, 0), (0x25, avc.NAL_IDR, 1)],
)  # fmt: skip
def test_nal_header(header: int, kind: int, ref_idc: int) -> None:
    assert avc.nal_type(bytes((header, 0x80))) == kind
    assert avc.nal_ref_idc(bytes((header,))) == ref_idc


def test_nal_header_empty() -> None:
    with pytest.raises(MalformedData):
        avc.nal_type(b"")
    with pytest.raises(MalformedData):
        avc.nal_ref_idc(b"")


def test_has_idr_and_parameter_sets() -> None:
    nals = [b"\x09\xf0", SPS_HIGH, b"", PPS_HIGH, b"\x06\x05", b"\x65\x88", PPS_BASELINE]
    assert avc.has_idr(nals)
    assert not avc.has_idr([b"\x41\x9a", b"", SPS_HIGH, PPS_HIGH])
    assert not avc.has_idr([])
    assert avc.parameter_sets(nals) == ([SPS_HIGH], [PPS_HIGH, PPS_BASELINE])
    assert avc.parameter_sets(iter([b"\x41\x9a"])) == ([], [])


# --- AVCDecoderConfigurationRecord -----------------------------------------------------


def _record(sps: list[bytes], pps: list[bytes], length_byte: int = 0xFF, tail: bytes = b"") -> bytes:
    head = bytes((1, sps[0][1], sps[0][2], sps[0][3], length_byte, 0xE0 | len(sps)))
    body = b"".join(len(n).to_bytes(2, "big") + n for n in sps) + bytes((len(pps),))
    return head + body + b"".join(len(n).to_bytes(2, "big") + n for n in pps) + tail


def test_decoder_config_parse() -> None:
    config = avc.decoder_config_parse(_record([SPS_HIGH], [PPS_HIGH], tail=b"\xfd\xf8\xf8\x00"))
    assert config == avc.AvcConfig((SPS_HIGH,), (PPS_HIGH,), 4)
    config = avc.decoder_config_parse(_record([SPS_BASELINE, SPS_HIGH], [PPS_BASELINE, PPS_HIGH], 0xFD))
    assert config == avc.AvcConfig((SPS_BASELINE, SPS_HIGH), (PPS_BASELINE, PPS_HIGH), 2)
    assert avc.decoder_config_parse(bytearray(_record([SPS_HIGH], [PPS_HIGH], 0xFC))).length_size == 1


def test_decoder_config_parse_takes_the_record_not_the_flv_tag_body() -> None:
    record = _record([SPS_MAIN_720], [PPS_HIGH])
    body = b"\x17\x00\x00\x00\x00" + record  # FLV AVC sequence header tag body
    assert avc.decoder_config_parse(record) == avc.AvcConfig((SPS_MAIN_720,), (PPS_HIGH,), 4)
    with pytest.raises(MalformedData):  # the FLV video header is not part of the record
        avc.decoder_config_parse(body)


@pytest.mark.parametrize("cut", range(39))
def test_decoder_config_parse_truncated(cut: int) -> None:
    record = _record([SPS_HIGH], [PPS_HIGH])
    assert len(record) == 39
    with pytest.raises(MalformedData):
        avc.decoder_config_parse(record[:cut])


def test_decoder_config_parse_bad_version() -> None:
    with pytest.raises(MalformedData):
        avc.decoder_config_parse(b"\x00" + _record([SPS_HIGH], [PPS_HIGH])[1:])


def test_decoder_config_build_baseline() -> None:
    record = avc.decoder_config_build([SPS_BASELINE], [PPS_BASELINE])
    assert record == b"\x01\x42\xc0\x1e\xff\xe1\x00\x18" + SPS_BASELINE + b"\x01\x00\x04" + PPS_BASELINE
    assert avc.decoder_config_parse(record) == avc.AvcConfig((SPS_BASELINE,), (PPS_BASELINE,), 4)


def test_decoder_config_build_high_extension() -> None:
    record = avc.decoder_config_build((SPS_HIGH,), (PPS_HIGH,))
    assert record == _record([SPS_HIGH], [PPS_HIGH], tail=b"\xfd\xf8\xf8\x00")  # 4:2:0, 8 bit, no SPS ext


@pytest.mark.parametrize(
    ("fields", "ext"),
    [
        ({"profile_idc": 110, "bit_depth_luma": 10, "bit_depth_chroma": 10}, b"\xfd\xfa\xfa\x00"),
        ({"profile_idc": 122, "chroma_format_idc": 2, "bit_depth_luma": 10, "bit_depth_chroma": 9}, b"\xfe\xfa\xf9\0"),
        ({"profile_idc": 100, "chroma_format_idc": 0}, b"\xfc\xf8\xf8\x00"),
        ({"profile_idc": 100, "scaling_lists": flat_scaling_lists(8)}, b"\xfd\xf8\xf8\x00"),
        ({"profile_idc": 244, "chroma_format_idc": 3}, b""),  # not in 100/110/122/144
        ({"profile_idc": 77}, b""),
        ({"profile_idc": 88}, b""),
    ],
)
def test_decoder_config_build_extension_fields(fields: dict, ext: bytes) -> None:
    sps = make_sps(**fields)
    record = avc.decoder_config_build([sps], [PPS_HIGH])
    assert record == _record([sps], [PPS_HIGH], tail=ext)


def test_decoder_config_build_many_parameter_sets() -> None:
    sps = [make_sps(level_idc=level) for level in (30, 31, 40)]
    pps = [bytes((0x68, i, 0x80)) for i in range(1, 6)]
    record = avc.decoder_config_build(sps, pps)
    assert record[5] == 0xE3
    assert avc.decoder_config_parse(record) == avc.AvcConfig(tuple(sps), tuple(pps), 4)


def test_decoder_config_build_misuse() -> None:
    for sps, pps in (([], [PPS_HIGH]), ([SPS_HIGH], []), ([SPS_HIGH] * 32, [PPS_HIGH]), ([SPS_HIGH], [PPS_HIGH] * 256)):
        with pytest.raises(ValueError) as excinfo:
            avc.decoder_config_build(sps, pps)
        assert not isinstance(excinfo.value, MalformedData)


@pytest.mark.parametrize(
    ("sps", "pps"),
    [
        ([PPS_HIGH], [PPS_HIGH]),
        ([SPS_HIGH], [SPS_HIGH]),
        ([SPS_HIGH], [b""]),
        ([SPS_HIGH[:5]], [PPS_HIGH]),
        ([SPS_HIGH], [b"\x68" + bytes(0x10000)]),
    ],
)
def test_decoder_config_build_bad_parameter_sets(sps: list[bytes], pps: list[bytes]) -> None:
    with pytest.raises(MalformedData):
        avc.decoder_config_build(sps, pps)


# --- SPS -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sps", "info", "plid"),
    [
        (SPS_BASELINE, avc.SpsInfo(66, 0xC0, 30, 640, 360), "42c01e"),
        (SPS_MAIN_720, avc.SpsInfo(77, 0x40, 31, 1280, 720), "4d401f"),
        (SPS_HIGH, avc.SpsInfo(100, 0x00, 30, 640, 360), "64001e"),
    ],
)
def test_sps_parse_x264(sps: bytes, info: avc.SpsInfo, plid: str) -> None:
    assert avc.sps_parse(sps) == info
    assert avc.sps_parse(bytearray(sps)) == info
    assert avc.profile_level_id(sps) == plid


@pytest.mark.parametrize(
    ("fields", "size"),
    [
        ({}, (640, 368)),
        ({"crop": (0, 0, 0, 4)}, (640, 360)),  # 4:2:0 crops count 2 pixels
        ({"crop": (1, 2, 3, 0), "vui": True}, (634, 362)),
        ({"frame_mbs_only": 0, "height_map_units": 23, "crop": (0, 0, 0, 4)}, (640, 720)),  # field units: 4 rows
        ({"profile_idc": 100, "chroma_format_idc": 0, "crop": (1, 0, 0, 3)}, (639, 365)),  # monochrome: 1x1
        ({"profile_idc": 100, "chroma_format_idc": 0, "frame_mbs_only": 0, "crop": (0, 0, 0, 1)}, (640, 734)),
        ({"profile_idc": 122, "chroma_format_idc": 2, "crop": (1, 1, 1, 1)}, (636, 366)),  # 4:2:2: 2x1
        ({"profile_idc": 244, "chroma_format_idc": 3, "crop": (1, 0, 0, 7)}, (639, 361)),  # 4:4:4: 1x1
        ({"profile_idc": 244, "chroma_format_idc": 3, "separate_planes": 1, "crop": (1, 0, 0, 7)}, (639, 361)),
        ({"profile_idc": 100, "scaling_lists": flat_scaling_lists(8), "crop": (0, 0, 0, 4)}, (640, 360)),
        ({"profile_idc": 244, "chroma_format_idc": 3, "scaling_lists": flat_scaling_lists(12)}, (640, 368)),
        ({"profile_idc": 100, "scaling_lists": [None, [-8], None, [4, 120, -128, -4], None, None, [0] * 64, None]},
         (640, 368)),
        ({"poc_type": 1, "poc_cycle": (3, -4, 5, 0)}, (640, 368)),
        ({"poc_type": 2, "width_mbs": 1, "height_map_units": 1}, (16, 16)),
        ({"width_mbs": 240, "height_map_units": 135}, (3840, 2160)),
        ({"profile_idc": 144, "chroma_format_idc": 3, "bit_depth_luma": 14}, (640, 368)),
    ],
)  # fmt: skip
def test_sps_parse_fields(fields: dict, size: tuple[int, int]) -> None:
    sps = make_sps(level_idc=41, constraint_flags=0x0C, **fields)
    info = avc.sps_parse(sps)
    assert (info.width, info.height) == size
    assert (info.profile_idc, info.constraint_flags, info.level_idc) == (fields.get("profile_idc", 66), 0x0C, 41)


def test_sps_parse_emulation_prevention() -> None:
    # Large Exp-Golomb values are long runs of zero bits that need escaping; the parse must see through them.
    sps = make_sps(poc_type=1, poc_cycle=(1 << 15, -(1 << 20), 1 << 24, 1), crop=(0, 0, 0, 4))
    assert b"\x00\x00\x03" in sps
    assert avc.sps_parse(sps) == avc.SpsInfo(66, 0, 30, 640, 360)


@pytest.mark.parametrize(
    "sps",
    [
        b"",
        b"\x68\x42\xc0\x1e",  # a PPS
        b"\x67",
        b"\x67\x42\xc0",
        SPS_HIGH[:6],
        b"\x67\x42\xc0\x1e" + bytes(8),  # Exp-Golomb code longer than 32 bits
        make_sps(poc_type=3),
        make_sps(profile_idc=100, chroma_format_idc=4),
        make_sps(profile_idc=100, bit_depth_luma=15),
        make_sps(poc_type=1, poc_cycle=(1,) * 256),
        make_sps(crop=(0, 0, 184, 0)),  # crops the whole picture
        make_sps(crop=(160, 160, 0, 0)),
    ],
)
def test_sps_parse_malformed(sps: bytes) -> None:
    with pytest.raises(MalformedData):
        avc.sps_parse(sps)


def test_sps_parse_truncated_prefixes() -> None:
    # Every prefix either fails cleanly or, once the fields before the VUI are complete, parses in full.
    for sps in (SPS_BASELINE, SPS_MAIN_720, SPS_HIGH):
        full = avc.sps_parse(sps)
        for cut in range(len(sps)):
            try:
                assert avc.sps_parse(sps[:cut]) == full
            except MalformedData:
                pass


def test_profile_level_id() -> None:
    assert avc.profile_level_id(make_sps(profile_idc=100, constraint_flags=0, level_idc=31)) == "64001f"
    assert avc.profile_level_id(b"\x67\x42\xe0\x1f") == "42e01f"
    assert avc.profile_level_id(b"\x67\x00\x00\x03\x01") == "000001"  # escaped (not a valid SPS, but RBSP-correct)
    for bad in (b"", b"\x67\x42\xe0", b"\x68\x42\xe0\x1f"):
        with pytest.raises(MalformedData):
            avc.profile_level_id(bad)


# --- properties ------------------------------------------------------------------------


def _valid_nal(raw: bytes) -> bytes:
    """A NAL unit body without 00 00 0x (x <= 3) sequences, with forbidden_zero_bit 0, not ending in 00."""
    out = bytearray()
    zeros = 0
    for i, b in enumerate(raw):
        if i == 0:
            b &= 0x7F
        if zeros >= 2 and b <= 3:
            b += 4
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    if out[-1] == 0:
        out[-1] = 0x80
    return bytes(out)


NALS = st.lists(st.binary(min_size=1, max_size=300).map(_valid_nal), max_size=12)


@settings(max_examples=300, deadline=None)
@given(NALS)
def test_avcc_annexb_round_trip(nals: list[bytes]) -> None:
    avcc = b"".join(len(n).to_bytes(4, "big") + n for n in nals)
    annexb = avc.avcc_to_annexb(avcc)
    assert avc.annexb_to_avcc(annexb) == avcc
    assert avc.split_annexb(annexb) == nals
    assert avc.split_avcc(avcc) == nals


@settings(max_examples=300, deadline=None)
@given(NALS, st.data())
def test_split_annexb_any_framing(nals: list[bytes], data: st.DataObject) -> None:
    parts = [b"\x00" * data.draw(st.integers(0, 4))]  # leading_zero_8bits
    for nal in nals:
        parts.append(data.draw(st.sampled_from([b"\x00\x00\x01", b"\x00\x00\x00\x01"])))
        parts.append(nal + b"\x00" * data.draw(st.integers(0, 3)))  # trailing_zero_8bits
    assert avc.split_annexb(b"".join(parts)) == nals


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=255), max_size=10), st.integers(1, 4))
def test_split_avcc_round_trip(nals: list[bytes], length_size: int) -> None:
    data = b"".join(len(n).to_bytes(length_size, "big") + n for n in nals)
    assert avc.split_avcc(data, length_size) == nals


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=4, max_size=64).map(lambda b: b"\x67" + b), min_size=1, max_size=31),
    st.lists(st.binary(max_size=64), max_size=255),
    st.integers(0, 3),
    st.binary(max_size=8),
)
def test_decoder_config_parse_round_trip(sps: list[bytes], pps: list[bytes], lsm1: int, tail: bytes) -> None:
    record = _record(sps, pps, 0xFC | lsm1, tail)
    assert avc.decoder_config_parse(record) == avc.AvcConfig(tuple(sps), tuple(pps), lsm1 + 1)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from([SPS_BASELINE, SPS_MAIN_720, SPS_HIGH]), min_size=1, max_size=4),
    st.lists(st.binary(max_size=40).map(lambda b: b"\x68" + b), min_size=1, max_size=4),
)
def test_decoder_config_build_round_trip(sps: list[bytes], pps: list[bytes]) -> None:
    config = avc.decoder_config_parse(avc.decoder_config_build(sps, pps))
    assert config == avc.AvcConfig(tuple(sps), tuple(pps), 4)
