"""Fuzz: FLV tag bodies and FLV framing, AVC configuration records, AudioSpecificConfig, OpusHead, VP8 headers.

Valid inputs built by hypothesis, then mutated (byte edits, cuts, length fields that lie), go into every
parser: the only exception allowed is MalformedData (a valid result is fine too), and adversarial
megabytes finish quickly. Arbitrary bytes alone are in tests/codecs/test_fuzz.py and tests/rtmp/test_fuzz.py.
There is no ADTS parser in media.codecs (the hub carries raw AAC frames), so none is fuzzed here.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from media.codecs import aac, avc, flv, opus, vp8
from media.codecs.errors import MalformedData
from tests.codecs.bits import audio_specific_config as _asc
from tests.codecs.bits import escape, make_sps

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPS_HIGH = bytes.fromhex("6764001eacb405017fcb08000003000800000301e078b175")
SPS_BASELINE = bytes.fromhex("6742c01eda0280bfe584000003000400000300f03c58ba80")
PPS_HIGH = bytes.fromhex("68ef0fcb")


def only_malformed(parse: Callable[[bytes], object], data: bytes) -> object:
    """parse(data), or None on MalformedData; any other exception fails the test."""
    try:
        return parse(data)
    except MalformedData:
        return None


# --- mutations: byte edits, cuts and length fields that lie ---------------------------------------------------

OPS = ("flip", "insert", "delete", "set", "cut", "lie", "repeat")
mutations = st.lists(
    st.tuples(st.sampled_from(OPS), st.integers(0, 1 << 16), st.integers(0, (1 << 32) - 1)), min_size=1, max_size=6
)


def mutate(data: bytes, ops: list[tuple[str, int, int]], fields: tuple[tuple[int, int], ...] = ()) -> bytes:
    """Apply ``ops``; a "lie" overwrites one of the known length ``fields`` ((offset, size) pairs) if given,
    else any 1..4 bytes, with a value from small to extreme."""
    buf = bytearray(data)
    for op, pos, value in ops:
        at = pos % (len(buf) + 1)
        if op == "flip" and buf:
            buf[at % len(buf)] ^= 1 << (value % 8)
        elif op == "insert":
            buf[at:at] = bytes([value & 0xFF]) * (1 + (value >> 8) % 4)
        elif op == "delete":
            del buf[at : at + 1 + value % 16]
        elif op == "set" and buf:
            buf[at % len(buf)] = value & 0xFF
        elif op == "cut":
            del buf[at:]
        elif op == "lie":
            offset, size = fields[pos % len(fields)] if fields else (at, 1 + value % 4)
            lie = (value, value & 0xFF, (1 << 8 * size) - 1 - (value & 0xF), 0)[value % 4] % (1 << 8 * size)
            buf[offset : offset + size] = lie.to_bytes(size, "big")
        elif op == "repeat":
            buf[at:at] = buf[at : at + 1 + value % 64]
    return bytes(buf)


# --- valid inputs built by hypothesis --------------------------------------------------------------------------


def escaped_nal(types: list[int]) -> st.SearchStrategy[bytes]:
    """A NAL unit of one of ``types`` with an escaped body ending in a stop bit (so never 00 00 0x inside)."""
    return st.builds(
        lambda t, nri, body: bytes([nri << 5 | t]) + escape(body + b"\x80"),
        st.sampled_from(types),
        st.integers(0, 3),
        st.binary(max_size=60),
    )


sps_seeds = st.sampled_from(
    [
        SPS_HIGH,
        SPS_BASELINE,
        make_sps(profile_idc=100, crop=(0, 0, 0, 4)),
        make_sps(profile_idc=244, chroma_format_idc=3, width_mbs=2, height_map_units=2),
        make_sps(poc_type=1, poc_cycle=(3, -1), frame_mbs_only=0, vui=True),
    ]
)


@st.composite
def avc_records(draw: st.DrawFn) -> bytes:
    sps = draw(st.lists(sps_seeds, min_size=1, max_size=3))
    pps = draw(st.lists(st.one_of(st.just(PPS_HIGH), escaped_nal([avc.NAL_PPS])), min_size=1, max_size=3))
    return avc.decoder_config_build(sps, pps)


ascs = st.one_of(
    st.builds(
        aac.config_build,
        st.one_of(st.sampled_from(aac.RATES), st.integers(1, (1 << 24) - 1)),
        st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 24]),
        st.sampled_from([1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23]),
    ),
    st.builds(
        _asc,
        st.integers(1, 95),
        st.integers(0, 15),
        st.integers(0, 15),
        st.integers(0, (1 << 24) - 1),
        st.binary(max_size=6),
    ),
)


@st.composite
def opus_heads(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return opus.opus_head(
            draw(st.sampled_from([1, 2])), draw(st.integers(0, 0xFFFFFFFF)), draw(st.integers(0, 0xFFFF))
        )
    channels = draw(st.integers(1, 8))
    streams = draw(st.integers(1, 8))
    coupled = draw(st.integers(0, streams))
    table = bytes(
        draw(st.lists(st.integers(0, streams + coupled - 1) | st.just(255), min_size=channels, max_size=channels))
    )
    head = struct.pack("<8sBBHIhB", b"OpusHead", 1, channels, 312, 48000, 0, draw(st.sampled_from([1, 255])))
    return head + bytes((streams, coupled)) + table


vp8_frames = st.one_of(
    st.builds(
        lambda tag, w, h, rest: bytes([tag & 0xFE, 0, 0]) + b"\x9d\x01\x2a" + struct.pack("<HH", w, h) + rest,
        st.integers(0, 255),
        st.integers(1, 0xFFFF),
        st.integers(1, 0xFFFF),
        st.binary(max_size=20),
    ),
    st.builds(lambda tag, rest: bytes([tag | 1]) + rest, st.integers(0, 255), st.binary(min_size=2, max_size=20)),
)


def _si24(value: int) -> bytes:
    return (value & 0xFFFFFF).to_bytes(3, "big")


cts = st.integers(-(1 << 23), (1 << 23) - 1)
avcc = st.lists(escaped_nal([1, 5, 6, 7, 8, 9]), max_size=4).map(avc.nals_to_avcc)
frame_type = st.sampled_from([1, 2, 1, 2, 3, 4, 5])  # mostly key and inter frames


@st.composite
def video_bodies(draw: st.DrawFn) -> bytes:
    """Legacy AVC and other FLV video, and Enhanced RTMP video, as publishers send them."""
    kind = draw(
        st.sampled_from(
            [
                "avc-header",
                "avc-frame",
                "avc-end",
                "legacy-other",
                "enhanced-header",
                "enhanced-frame",
                "enhanced-other",
            ]
        )
    )
    frame = draw(frame_type)
    if kind == "avc-header":
        return bytes([frame << 4 | 7, 0]) + _si24(0) + draw(avc_records())
    if kind == "avc-frame":
        return bytes([frame << 4 | 7, 1]) + _si24(draw(cts)) + draw(avcc)
    if kind == "avc-end":
        return bytes([frame << 4 | 7, 2]) + _si24(0)
    if kind == "legacy-other":
        codec_id = draw(st.sampled_from([2, 3, 4, 5, 6, 12, 13]))  # 12, 13: HEVC, AV1 with AVC's layout
        head = bytes([draw(st.integers(0, 2)), *_si24(draw(cts))]) if codec_id >= 12 else b""
        return bytes([frame << 4 | codec_id]) + head + draw(st.binary(max_size=40))
    fourcc = draw(st.sampled_from([b"avc1", b"hvc1", b"av01", b"vp09", b"xxxx"]))
    head = bytes([0x80 | (frame & 7) << 4]) + fourcc
    if kind == "enhanced-header":
        record = draw(avc_records()) if fourcc == b"avc1" else draw(st.binary(max_size=40))
        return bytes([head[0] | flv.PACKET_SEQUENCE_START]) + head[1:] + record
    if kind == "enhanced-frame":
        offset = _si24(draw(cts)) if fourcc in (b"avc1", b"hvc1") else b""
        return bytes([head[0] | flv.PACKET_CODED_FRAMES]) + head[1:] + offset + draw(avcc)
    packet_type = draw(st.sampled_from([2, 3, 4, 5, 6, 7, 15]))
    return bytes([head[0] | packet_type]) + head[1:] + draw(st.binary(max_size=40))


aac_flags = st.one_of(st.just(0xAF), st.integers(0xA0, 0xAF))  # mostly 44 kHz, 16-bit, stereo as FLV says for AAC


@st.composite
def audio_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["aac-header", "aac-frame", "legacy-other", "enhanced"]))
    if kind == "aac-header":
        return bytes([draw(aac_flags), 0]) + draw(ascs)
    if kind == "aac-frame":
        return bytes([draw(aac_flags), 1]) + draw(st.binary(max_size=60))
    if kind == "legacy-other":
        fmt = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 14, 15]))
        return bytes([fmt << 4 | draw(st.integers(0, 15))]) + draw(st.binary(max_size=40))
    fourcc = draw(st.sampled_from([b"Opus", b"mp4a", b"fLaC", b".mp3", b"ac-3", b"????"]))
    packet_type = draw(st.sampled_from([0, 1, 2, 4, 5, 15]))
    setup = draw(opus_heads()) if fourcc == b"Opus" else draw(ascs) if fourcc == b"mp4a" else b""
    return bytes([0x90 | packet_type]) + fourcc + (setup if packet_type == 0 else draw(st.binary(max_size=40)))


tag_bodies = st.one_of(
    st.tuples(st.just(flv.TAG_VIDEO), video_bodies()),
    st.tuples(st.just(flv.TAG_AUDIO), audio_bodies()),
    st.tuples(st.just(flv.TAG_SCRIPT), st.binary(max_size=40)),
)


# --- FLV tag bodies --------------------------------------------------------------------------------------------


@FUZZ
@given(video_bodies())
def test_valid_video_bodies_parse(body: bytes) -> None:
    info = flv.parse_video(body)
    if body[0] & 0x80:
        assert info.enhanced and info.codec == {b"avc1": "h264", b"hvc1": "hevc", b"av01": "av1", b"vp09": "vp9"}.get(
            body[1:5], "unknown"
        )
        if body[0] & 0x0F == flv.PACKET_CODED_FRAMES and body[1:5] in (b"avc1", b"hvc1"):
            assert info.composition_time == int.from_bytes(body[5:8], "big", signed=True)
    elif body[0] & 0x0F == 7:
        assert info.codec == "h264" and info.keyframe == (body[0] >> 4 == 1)
        assert info.is_sequence_header == (body[1] == 0) and info.is_end_of_sequence == (body[1] == 2)
        assert info.composition_time == int.from_bytes(body[2:5], "big", signed=True)


@FUZZ
@given(audio_bodies())
def test_valid_audio_bodies_parse(body: bytes) -> None:
    info = flv.parse_audio(body)
    if body[0] >> 4 == 10:
        assert info.codec == "aac" and info.is_sequence_header == (body[1] == 0)


@FUZZ
@given(tag_bodies, mutations)
def test_mutated_tag_bodies(tag: tuple[int, bytes], ops: list[tuple[str, int, int]]) -> None:
    _, body = tag
    body = mutate(body, ops)
    only_malformed(flv.parse_video, body)
    only_malformed(flv.parse_audio, body)


# --- FLV framing -----------------------------------------------------------------------------------------------


def flv_file(tags: list[tuple[int, int, bytes]]) -> tuple[bytes, tuple[tuple[int, int], ...]]:
    """An FLV stream and its length fields: each tag's DataSize, Timestamp(+Extended) and PreviousTagSize."""
    data = bytearray(flv.FLV_HEADER_AUDIO_VIDEO)
    fields = [(5, 4)]  # the header's DataOffset
    for tag_type, ts, body in tags:
        at = len(data)
        fields += [(at + 1, 3), (at + 4, 3), (at + 7, 1), (at + 11 + len(body), 4)]
        data += flv.flv_tag(tag_type, ts, body)
    return bytes(data), tuple(fields)


flv_tags = st.lists(
    st.tuples(tag_bodies, st.integers(0, 0xFFFFFFFF)).map(lambda t: (t[0][0], t[1], t[0][1])), max_size=6
)
cuts = st.lists(st.integers(0, 1 << 16), max_size=5)


def feed(reader: flv.FlvReader, data: bytes, at: list[int]) -> list[flv.FlvTag]:
    tags, last = [], 0
    for p in [*sorted(c % (len(data) + 1) for c in at), len(data)]:
        tags += reader.feed(data[last:p])
        last = p
    return tags


@FUZZ
@given(flv_tags, cuts)
def test_flv_stream_cut_anywhere_gives_the_tags_back(tags: list[tuple[int, int, bytes]], at: list[int]) -> None:
    data, _ = flv_file(tags)
    reader = flv.FlvReader()
    assert [(t.tag_type, t.timestamp, t.payload) for t in feed(reader, data, at)] == tags
    assert reader.has_audio and reader.has_video and not reader._buf


@FUZZ
@given(flv_tags, mutations, cuts)
@example([(flv.TAG_VIDEO, 0, b"\x17\x01\x00\x00\x00")], [("lie", 1, 0xFFFFFF)], [])  # a 16 MiB DataSize
@example([], [("lie", 0, 0)], [])  # DataOffset 0
def test_mutated_flv_stream(tags: list[tuple[int, int, bytes]], ops: list[tuple[str, int, int]], at: list[int]) -> None:
    data, fields = flv_file(tags)
    for lying_fields in (fields, ()):
        reader = flv.FlvReader()
        try:
            got = feed(reader, mutate(data, ops, lying_fields), at)
        except MalformedData:
            continue
        for tag in got:
            assert 0 <= tag.tag_type < 32 and 0 <= tag.timestamp <= 0xFFFFFFFF and len(tag.payload) <= 0xFFFFFF
            only_malformed(flv.parse_video if tag.tag_type == flv.TAG_VIDEO else flv.parse_audio, tag.payload)
        assert len(reader._buf) < 11 + 0xFFFFFF + 4 + 1024 + 4  # at most one pending tag (or header)


# --- AVCDecoderConfigurationRecord ------------------------------------------------------------------------------


def record_fields(record: bytes) -> tuple[tuple[int, int], ...]:
    """Offsets of the counts and 16-bit lengths of a well-formed record."""
    fields, pos = [(5, 1)], 6
    for _ in range(record[5] & 0x1F):
        fields.append((pos, 2))
        pos += 2 + int.from_bytes(record[pos : pos + 2], "big")
    fields.append((pos, 1))
    count, pos = record[pos], pos + 1
    for _ in range(count):
        fields.append((pos, 2))
        pos += 2 + int.from_bytes(record[pos : pos + 2], "big")
    return tuple(fields)


@FUZZ
@given(st.lists(sps_seeds, min_size=1, max_size=3), st.lists(escaped_nal([avc.NAL_PPS]), min_size=1, max_size=3))
def test_avc_record_round_trip(sps: list[bytes], pps: list[bytes]) -> None:
    config = avc.decoder_config_parse(avc.decoder_config_build(sps, pps))
    assert config == avc.AvcConfig(tuple(sps), tuple(pps), 4)


@FUZZ
@given(avc_records(), mutations)
def test_mutated_avc_record(record: bytes, ops: list[tuple[str, int, int]]) -> None:
    for fields in (record_fields(record), ()):
        mutated = mutate(record, ops, fields)
        config = only_malformed(avc.decoder_config_parse, mutated)
        if config is not None:
            assert 1 <= config.length_size <= 4
            assert sum(len(n) + 2 for n in config.sps + config.pps) + 7 <= len(mutated)
            for nal in config.sps:
                only_malformed(avc.sps_parse, nal)
                only_malformed(avc.profile_level_id, nal)


# --- AudioSpecificConfig ----------------------------------------------------------------------------------------


@FUZZ
@given(
    st.one_of(st.sampled_from(aac.RATES), st.integers(1, (1 << 24) - 1)),
    st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 24]),
    st.sampled_from([1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23]),
)
def test_asc_round_trip(rate: int, channels: int, object_type: int) -> None:
    assert aac.config_parse(aac.config_build(rate, channels, object_type)) == aac.AacConfig(object_type, rate, channels)


@FUZZ
@given(ascs, mutations)
def test_mutated_asc(asc: bytes, ops: list[tuple[str, int, int]]) -> None:
    config = only_malformed(aac.config_parse, mutate(asc, ops))
    if config is not None:
        assert 1 <= config.object_type <= 95 and 0 < config.sample_rate < 1 << 24 and 0 <= config.channels <= 24


# --- OpusHead and VP8 ------------------------------------------------------------------------------------------


@FUZZ
@given(opus_heads(), mutations)
def test_mutated_opus_head(head: bytes, ops: list[tuple[str, int, int]]) -> None:
    channels, _ = opus.opus_head_parse(head)
    assert channels == head[9]
    for fields in (((9, 1), (18, 1), (19, 1), (20, 1)), ()):
        got = only_malformed(opus.opus_head_parse, mutate(head, ops, fields))
        if got is not None:
            assert 1 <= got[0] <= 255


@FUZZ
@given(vp8_frames, mutations)
def test_mutated_vp8_frame(frame: bytes, ops: list[tuple[str, int, int]]) -> None:
    width, height = (int.from_bytes(frame[i : i + 2], "little") & 0x3FFF for i in (6, 8))
    if not vp8.is_keyframe(frame):
        assert vp8.keyframe_size(frame) is None
    elif width and height:
        assert vp8.keyframe_size(frame) == (width, height)
    else:
        with pytest.raises(MalformedData):
            vp8.keyframe_size(frame)
    mutated = mutate(frame, ops)
    only_malformed(vp8.is_keyframe, mutated)
    size = only_malformed(vp8.keyframe_size, mutated)
    if size is not None:
        assert 0 < size[0] < 1 << 14 and 0 < size[1] < 1 << 14


# --- adversarial megabytes --------------------------------------------------------------------------------------

MEGABYTE = random.Random(20261202).randbytes(1 << 20)


def _timed(limit: float, work: Callable[[], object]) -> object:
    start = time.monotonic()
    result = work()
    assert time.monotonic() - start < limit
    return result


def test_megabyte_flv_streams_are_fast() -> None:
    # A tag that claims 16 MiB and never ends, fed in 4 KiB pieces: held, not re-parsed, no tag out.
    lying = flv.FLV_HEADER_AUDIO_VIDEO + flv.flv_tag_header(flv.TAG_VIDEO, 0, 0xFFFFFF) + MEGABYTE
    reader = flv.FlvReader()
    _timed(2.0, lambda: [reader.feed(lying[i : i + 4096]) for i in range(0, len(lying), 4096)])
    assert not reader.feed(b"") and len(reader._buf) == len(lying) - 13
    # About 70,000 empty tags at once and in 1000-byte pieces.
    tiny = flv.FLV_HEADER_AUDIO_VIDEO + flv.flv_tag(flv.TAG_AUDIO, 7, b"") * ((1 << 20) // 15)
    assert len(_timed(2.0, lambda: flv.FlvReader().feed(tiny))) == (1 << 20) // 15
    reader = flv.FlvReader()
    assert _timed(2.0, lambda: sum(len(reader.feed(tiny[i : i + 1000])) for i in range(0, len(tiny), 1000))) == (
        (1 << 20) // 15
    )
    # Random megabytes behind a valid header: whatever tags the sizes say, quickly.
    for blob in (MEGABYTE, MEGABYTE.replace(b"\xff", b"\x00")):
        _timed(2.0, lambda blob=blob: only_malformed(flv.FlvReader().feed, flv.FLV_HEADER_AUDIO_VIDEO + blob))


@pytest.mark.parametrize(
    "data",
    [
        MEGABYTE,
        b"\x17\x00\x00\x00\x00" + MEGABYTE,
        b"\x17\x01\x00\x00\x00" + MEGABYTE,
        b"\x91hvc1" + MEGABYTE,
        b"\xaf\x00" + MEGABYTE,
        b"\x90Opus" + MEGABYTE,
        # an AVC record whose counts and lengths all claim the most: 31 SPS and the maximal 16-bit lengths
        b"\x01\x64\x00\x1f\xff\xff" + b"\xff\xff" * (1 << 19),
        b"\x01\x64\x00\x1f\xff\xe1"
        + (0xFFFF).to_bytes(2, "big")
        + b"\x67" * 0xFFFF
        + b"\xff"
        + b"\x00\x01\x68" * 300_000,
        b"OpusHead\x01\xff\x38\x01\x80\xbb\x00\x00\x00\x00\xff\xff\x00" + b"\x00" * (1 << 20),
        b"\x10\x02\x00\x9d\x01\x2a\xff\xff\xff\xff" + MEGABYTE,
    ],
    ids=[
        "random",
        "avc-header",
        "avc-frame",
        "hevc-frame",
        "aac-header",
        "opus-header",
        "avc-record-lies",
        "avc-record-ppss",
        "opus-family-255",
        "vp8-key",
    ],
)
def test_megabyte_bodies_are_fast(data: bytes) -> None:
    parsers = (
        flv.parse_video,
        flv.parse_audio,
        avc.decoder_config_parse,
        aac.config_parse,
        opus.opus_head_parse,
        vp8.keyframe_size,
        lambda d: avc.decoder_config_parse(d[5:]),
        lambda d: aac.config_parse(d[2:]),
        lambda d: opus.opus_head_parse(d[5:]),
    )
    _timed(2.0, lambda: [only_malformed(parse, data) for parse in parsers])
