"""Fuzz: FLV tag bodies <-> hub access units (media.codecs.flv_units), both ways.

FLV tag -> unit: arbitrary and mutated bodies and whole FLV files only ever raise MalformedData, and what
comes out is a well-formed unit in the hub's canonical form. Unit -> FLV tag never raises, and the round
trips hold: unit -> tag body -> unit, unit -> FLV file -> units, and canonical body -> unit -> body.
"""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media.codecs import avc, flv
from media.codecs.errors import MalformedData
from media.codecs.flv_units import TAG_TYPE, FlvUnits, carries, flv_access_units, unit_tag_body
from media.hub.unit import AUDIO, DATA, TICKS_PER_MS, VIDEO, AccessUnit
from tests.codecs.test_fuzz_flv_aac import (
    MEGABYTE,
    PPS_HIGH,
    SPS_HIGH,
    ascs,
    audio_bodies,
    avc_records,
    avcc,
    escaped_nal,
    flv_file,
    mutate,
    mutations,
    tag_bodies,
    video_bodies,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FLV_CODECS = ("h264", "hevc", "av1", "vp9")


def check_unit(unit: AccessUnit | None, ms: int) -> None:
    """A unit as FlvUnits makes it: the hub's time base and, for H.264, the canonical form."""
    if unit is None:
        return
    assert unit.kind in (VIDEO, AUDIO, DATA) and type(unit.payload) is bytes
    assert unit.dts == ms * TICKS_PER_MS and carries(unit.codec)
    if unit.kind == VIDEO:  # legacy ids 12 and 13 (HEVC, AV1) have AVC's composition time too
        assert unit.pts - unit.dts in range(-(1 << 23) * TICKS_PER_MS, (1 << 23) * TICKS_PER_MS, TICKS_PER_MS)
    else:
        assert unit.pts == unit.dts
    if unit.codec == "h264" and unit.config:
        assert len(unit.payload) >= 7 and unit.payload[0] == 1 and unit.payload[4] & 0x03 == 0x03  # 4-byte lengths
    if unit.kind == AUDIO:
        assert unit.keyframe != unit.config


def to_units(units: FlvUnits, tag_type: int, body: bytes, ms: int) -> AccessUnit | None:
    """One body through FlvUnits as an RTMP publisher's message would go; None on MalformedData."""
    try:
        if tag_type == flv.TAG_VIDEO:
            unit = units.video(body, ms)
        elif tag_type == flv.TAG_AUDIO:
            unit = units.audio(body, ms)
        else:
            unit = FlvUnits.script(body, ms, metadata=bool(ms & 1))
    except MalformedData:
        return None
    check_unit(unit, ms)
    return unit


# A publisher's messages: mostly valid, some mutated, some random after a plausible first byte or two.
PREFIXES = [
    b"\x17\x00\x00\x00\x00",
    b"\x17\x01",
    b"\x27\x01\xff\xff\xff",
    b"\x17\x02",
    b"\x12",
    b"\x90avc1",
    b"\x91avc1",
    b"\x93avc1",
    b"\x90hvc1",
    b"\x91hvc1",
    b"\x94hvc1",
    b"\x91av01",
    b"\x81vp09",
    b"\xaf\x00",
    b"\xaf\x01",
    b"\x2f",
    b"\x90Opus",
    b"\x91mp4a",
    b"\x9f????",
]
messages = st.lists(
    st.tuples(
        st.one_of(
            tag_bodies,
            st.tuples(tag_bodies, mutations).map(lambda t: (t[0][0], mutate(t[0][1], t[1]))),
            st.tuples(
                st.sampled_from([flv.TAG_VIDEO, flv.TAG_AUDIO]), st.sampled_from(PREFIXES), st.binary(max_size=30)
            ).map(lambda t: (t[0], t[1] + t[2])),
        ),
        st.integers(0, 0xFFFFFFFF),
    ),
    max_size=10,
)


def length_size_record(length_size: int) -> bytes:
    record = avc.decoder_config_build([SPS_HIGH], [PPS_HIGH])
    return record[:4] + bytes([0xFC | (length_size - 1)]) + record[5:]


@FUZZ
@given(st.sampled_from([1, 2, 3, 4]), messages)
def test_publisher_messages_only_raise_malformed(length_size: int, bodies: list[tuple[tuple[int, bytes], int]]) -> None:
    units = FlvUnits()
    to_units(units, flv.TAG_VIDEO, b"\x17\x00\x00\x00\x00" + length_size_record(length_size), 0)
    for (tag_type, body), ms in bodies:
        unit = to_units(units, tag_type, body, ms)
        if unit is not None and unit.codec == "h264" and not unit.config and units.length_size != 4:
            avc.split_avcc(unit.payload)  # converted to 4-byte lengths: always splits


@FUZZ
@given(st.lists(st.tuples(tag_bodies, st.integers(0, 0xFFFFFFFF)), max_size=6), mutations, st.booleans())
def test_mutated_flv_file_to_units(
    tags: list[tuple[tuple[int, bytes], int]], ops: list[tuple[str, int, int]], lie: bool
) -> None:
    data, fields = flv_file([(t, ms, body) for (t, body), ms in tags])
    try:
        units = flv_access_units(mutate(data, ops, fields if lie else ()), (VIDEO, AUDIO))
    except MalformedData:
        return
    for unit in units:
        check_unit(unit, unit.dts // TICKS_PER_MS)


def test_megabyte_bodies_to_units_are_fast() -> None:
    start = time.monotonic()
    units = FlvUnits()
    units.video(b"\x17\x00\x00\x00\x00" + length_size_record(1), 0)
    for body in (
        b"\x17\x01\x00\x00\x00" + MEGABYTE,
        b"\x17\x01\x00\x00\x00" + b"\x00" * (1 << 20),
        b"\x17\x01\x00\x00\x00" + b"\x01\x65" * (1 << 19),
        b"\x91hvc1" + MEGABYTE,
        b"\xaf\x01" + MEGABYTE,
        MEGABYTE,
    ):
        to_units(units, flv.TAG_VIDEO, body, 1)
        to_units(units, flv.TAG_AUDIO, body, 1)
    data = flv.FLV_HEADER_AUDIO_VIDEO + flv.flv_tag(flv.TAG_VIDEO, 0, b"\x27\x01\x00\x00\x00") * ((1 << 20) // 20)
    assert len(flv_access_units(data)) == (1 << 20) // 20
    assert time.monotonic() - start < 3.0


# --- unit -> FLV tag -> unit ------------------------------------------------------------------------------------

ms = st.integers(0, 0xFFFFFFFF)
cts_ms = st.integers(-(1 << 23), (1 << 23) - 1)


@st.composite
def flv_units(draw: st.DrawFn) -> AccessUnit:
    """A hub unit of a codec FLV carries, at a millisecond time (FLV's resolution)."""
    dts = draw(ms) * TICKS_PER_MS
    codec = draw(st.sampled_from(["h264", "hevc", "av1", "vp9", "aac", "flv/mp3", "flv/video2", "amf0"]))
    config = draw(st.booleans()) and codec not in ("flv/mp3", "flv/video2", "amf0")
    if codec == "amf0":
        return AccessUnit(DATA, codec, dts, dts, draw(st.binary(max_size=40)), config=draw(st.booleans()))
    if codec == "aac":
        payload = draw(ascs) if config else draw(st.binary(max_size=60))
        return AccessUnit(AUDIO, codec, dts, dts, payload, keyframe=not config, config=config)
    if codec == "flv/mp3":
        return AccessUnit(AUDIO, codec, dts, dts, bytes([0x2F]) + draw(st.binary(max_size=40)), keyframe=True)
    if codec == "flv/video2":
        keyframe = draw(st.booleans())
        return AccessUnit(
            VIDEO,
            codec,
            dts,
            dts,
            bytes([(1 if keyframe else 2) << 4 | 2]) + draw(st.binary(max_size=40)),
            keyframe=keyframe,
        )
    if config:
        payload = draw(avc_records()) if codec == "h264" else draw(st.binary(max_size=40))
        return AccessUnit(VIDEO, codec, dts, dts, payload, config=True)
    pts = dts + draw(cts_ms) * TICKS_PER_MS if codec in ("h264", "hevc") else dts
    return AccessUnit(VIDEO, codec, dts, pts, draw(avcc), keyframe=draw(st.booleans()))


def from_body(unit: AccessUnit, body: bytes) -> AccessUnit | None:
    units = FlvUnits()
    if unit.kind == DATA:
        return FlvUnits.script(body, unit.ms, metadata=unit.config)
    return units.video(body, unit.ms) if unit.kind == VIDEO else units.audio(body, unit.ms)


@FUZZ
@given(flv_units())
def test_unit_tag_unit_round_trip(unit: AccessUnit) -> None:
    body = unit_tag_body(unit)
    assert from_body(unit, body) == unit


@FUZZ
@given(st.lists(flv_units(), max_size=8))
def test_units_through_an_flv_file_round_trip(units: list[AccessUnit]) -> None:
    tags = [(TAG_TYPE[u.kind], u.ms, unit_tag_body(u)) for u in units]
    data, _ = flv_file(tags)
    # flv_access_units keeps FlvUnits' state from tag to tag, as one publisher: the same units come back.
    assert flv_access_units(data) == [u for u in units if u.kind != DATA]
    assert [(t.tag_type, t.timestamp, t.payload) for t in flv.FlvReader().feed(data)] == tags


@FUZZ
@given(
    st.one_of(video_bodies().map(lambda b: (flv.TAG_VIDEO, b)), audio_bodies().map(lambda b: (flv.TAG_AUDIO, b))),
    st.integers(0, 0xFFFFFFFF),
)
def test_canonical_body_unit_body_round_trip(tag: tuple[int, bytes], at: int) -> None:
    # Bodies already in the form unit_tag_body writes come back byte for byte.
    tag_type, body = tag
    unit = to_units(FlvUnits(), tag_type, body, at)
    if unit is not None and _canonical(body, unit):
        assert unit_tag_body(unit) == body


def _canonical(body: bytes, unit: AccessUnit) -> bool:
    """Is this body what unit_tag_body writes for its unit? (FLV allows several spellings of some.)"""
    if unit.codec.startswith("flv/"):
        return True
    if unit.codec == "h264":
        return (
            body[0] & 0x80 == 0 and body[0] in (0x17, 0x27) and (not unit.config or body[:5] == b"\x17\x00\x00\x00\x00")
        )
    if unit.codec == "aac":
        return body[0] == 0xAF and body[1] in (0, 1)
    if unit.codec in ("hevc", "av1", "vp9") and body[0] & 0x80:
        frame, packet_type = body[0] >> 4 & 0x07, body[0] & 0x0F
        return frame in (1, 2) and (packet_type == flv.PACKET_CODED_FRAMES or (packet_type == 0 and frame == 1))
    return False


@FUZZ
@given(
    st.sampled_from(["h264", "hevc", "av1", "vp9", "vp8", "opus", "aac", "amf0", "flv/x", "flv/", "", "H264", "\x00"]),
    st.sampled_from([VIDEO, AUDIO, DATA]),
    st.integers(-(1 << 40), 1 << 40),
    st.integers(-(1 << 40), 1 << 40),
    st.binary(max_size=40),
    st.booleans(),
    st.booleans(),
)
def test_unit_tag_body_never_raises(
    codec: str, kind: str, dts: int, pts: int, payload: bytes, keyframe: bool, config: bool
) -> None:
    body = unit_tag_body(AccessUnit(kind, codec, dts, pts, payload, keyframe=keyframe, config=config))
    assert type(body) is bytes
    if not carries(codec):
        assert body == b""
    elif codec not in ("amf0",) and not codec.startswith("flv/"):
        assert body and (flv.parse_video(body) if codec != "aac" else flv.parse_audio(body)).codec == codec


@FUZZ
@given(st.lists(escaped_nal([1, 5, 6, 9]), min_size=1, max_size=4), st.sampled_from([1, 2, 4]))
def test_short_nal_lengths_become_canonical(nals: list[bytes], length_size: int) -> None:
    units = FlvUnits()
    config = units.video(b"\x17\x00\x00\x00\x00" + length_size_record(length_size), 0)
    assert config is not None and config.payload == length_size_record(4)
    nals = [n[: (1 << 8 * length_size) - 1] for n in nals]
    body = b"\x17\x01\x00\x00\x00" + b"".join(len(n).to_bytes(length_size, "big") + n for n in nals)
    unit = units.video(body, 5)
    assert unit is not None and avc.split_avcc(unit.payload) == nals
