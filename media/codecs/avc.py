"""H.264/AVC: NAL unit framing (Annex B and AVCC), decoder configuration records and SPS parsing."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import MalformedData

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

_START_CODE = b"\x00\x00\x01"
_START_CODE4 = b"\x00\x00\x00\x01"
_LENGTH4 = struct.Struct(">I")

# Profiles whose SPS carries chroma_format_idc, bit depths and scaling matrices (H.264 7.3.2.1.1);
# 144 is the withdrawn High 4:4:4 profile, still found in old streams.
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135, 144})
# Profiles for which the AVCDecoderConfigurationRecord carries the chroma/bit depth extension.
_AVCC_EXT_PROFILES = frozenset({100, 110, 122, 144})


# --- NAL unit framing ------------------------------------------------------------


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream, start codes and zero padding removed.

    Bytes before the first start code are ignored, as FFmpeg does; empty units are dropped.
    A NAL unit never ends in 0x00 (its RBSP ends in a stop bit or an escaped cabac_zero_word),
    so trailing zeros - trailing_zero_8bits and the first byte of a 4-byte start code - are stripped.
    """
    if type(data) is not bytes:
        data = bytes(data)
    find = data.find
    nals = []
    pos = find(_START_CODE)
    while pos >= 0:
        begin = pos + 3
        pos = find(_START_CODE, begin)
        nal = data[begin:] if pos < 0 else data[begin:pos]
        if nal and nal[-1] == 0:
            nal = nal.rstrip(b"\x00")
        if nal:
            nals.append(nal)
    return nals


def annexb_to_avcc(data: bytes) -> bytes:
    """Annex B to AVCC (each NAL unit prefixed with its 4-byte big-endian length), as MP4/FLV carry it."""
    return nals_to_avcc(split_annexb(data))


def nals_to_avcc(nals: Iterable[bytes]) -> bytes:
    """NAL units, each after its 4-byte big-endian length (the hub's H.264 form)."""
    pack = _LENGTH4.pack
    return b"".join(pack(len(nal)) + nal for nal in nals)


def nals_to_annexb(nals: Iterable[bytes]) -> bytes:
    """NAL units, each after a 4-byte start code (decoders, MPEG-TS, RTP packetizers)."""
    return b"".join(_START_CODE4 + nal for nal in nals)


def split_avcc(data: bytes, length_size: int = 4) -> list[bytes]:
    """NAL units of length-prefixed (AVCC) data; empty units are dropped as in ``split_annexb``."""
    if not 1 <= length_size <= 4:
        raise ValueError(f"NAL length size {length_size} not in 1..4")
    if type(data) is not bytes:
        data = bytes(data)
    nals = []
    pos, end = 0, len(data)
    while pos < end:
        start = pos + length_size
        if start > end:
            raise MalformedData(f"truncated NAL unit length at offset {pos}")
        stop = start + int.from_bytes(data[pos:start], "big")
        if stop > end:
            raise MalformedData(f"NAL unit at offset {pos} overruns the data by {stop - end} bytes")
        if stop > start:
            nals.append(data[start:stop])
        pos = stop
    return nals


def avcc_to_annexb(data: bytes, length_size: int = 4) -> bytes:
    """AVCC to Annex B with 4-byte start codes, as decoders, MPEG-TS and RTP packetizers expect."""
    return nals_to_annexb(split_avcc(data, length_size))


def nal_type(nal: bytes) -> int:
    """nal_unit_type (low 5 bits of the NAL header)."""
    if not nal:
        raise MalformedData("empty NAL unit")
    return nal[0] & 0x1F


def nal_ref_idc(nal: bytes) -> int:
    """nal_ref_idc (0 means the unit is disposable, e.g. for frame dropping)."""
    if not nal:
        raise MalformedData("empty NAL unit")
    return (nal[0] >> 5) & 0x03


def has_idr(nals: Iterable[bytes]) -> bool:
    """Whether an access unit contains an IDR slice (a random access point); empty units are ignored."""
    return any(nal and nal[0] & 0x1F == NAL_IDR for nal in nals)


def parameter_sets(nals: Iterable[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(SPS list, PPS list) found among ``nals``, in stream order; empty units are ignored."""
    sps: list[bytes] = []
    pps: list[bytes] = []
    for nal in nals:
        if nal:
            kind = nal[0] & 0x1F
            if kind == NAL_SPS:
                sps.append(nal)
            elif kind == NAL_PPS:
                pps.append(nal)
    return sps, pps


# --- AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) ----------------------


@dataclass(frozen=True, slots=True)
class AvcConfig:
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    length_size: int


def decoder_config_parse(record: bytes) -> AvcConfig:
    """Parameter sets and NAL length size of an AVCDecoderConfigurationRecord (avcC box body).

    The optional High profile extension after the PPS is ignored, as decoders do: encoders
    disagree on when to write it.
    """
    record = bytes(record)
    if len(record) < 7:
        raise MalformedData(f"AVCDecoderConfigurationRecord too short ({len(record)} bytes)")
    if record[0] != 1:
        raise MalformedData(f"unknown AVCDecoderConfigurationRecord version {record[0]}")
    sps, pos = _read_parameter_sets(record, 6, record[5] & 0x1F, "SPS")
    if pos >= len(record):
        raise MalformedData("AVCDecoderConfigurationRecord lacks the PPS count")
    pps, _ = _read_parameter_sets(record, pos + 1, record[pos], "PPS")
    return AvcConfig(sps, pps, (record[4] & 0x03) + 1)


def _read_parameter_sets(record: bytes, pos: int, count: int, what: str) -> tuple[tuple[bytes, ...], int]:
    items = []
    for _ in range(count):
        if pos + 2 > len(record):
            raise MalformedData(f"truncated {what} length in AVCDecoderConfigurationRecord")
        end = pos + 2 + int.from_bytes(record[pos : pos + 2], "big")
        if end > len(record):
            raise MalformedData(f"truncated {what} in AVCDecoderConfigurationRecord")
        items.append(record[pos + 2 : end])
        pos = end
    return tuple(items), pos


def decoder_config_build(sps: Sequence[bytes], pps: Sequence[bytes]) -> bytes:
    """An AVCDecoderConfigurationRecord with 4-byte NAL lengths, for FLV sequence headers and MP4 avcC.

    Profile, compatibility and level come from the first SPS. For profile_idc 100/110/122/144 the
    chroma format / bit depth extension (no SPS extensions) follows, byte for byte as FFmpeg writes it.
    """
    if not 1 <= len(sps) <= 31:
        raise ValueError(f"need 1..31 SPS, got {len(sps)}")
    if not 1 <= len(pps) <= 255:
        raise ValueError(f"need 1..255 PPS, got {len(pps)}")
    for kind, nals in ((NAL_SPS, sps), (NAL_PPS, pps)):
        for nal in nals:
            if nal_type(nal) != kind:
                raise MalformedData(f"NAL unit of type {nal_type(nal)} where type {kind} was expected")
            if len(nal) > 0xFFFF:
                raise MalformedData(f"parameter set of {len(nal)} bytes does not fit a 16-bit length")
    fields = _parse_sps(bytes(sps[0]))
    parts = [bytes((1, fields.profile_idc, fields.constraint_flags, fields.level_idc, 0xFF, 0xE0 | len(sps)))]
    parts += (len(nal).to_bytes(2, "big") + bytes(nal) for nal in sps)
    parts.append(bytes((len(pps),)))
    parts += (len(nal).to_bytes(2, "big") + bytes(nal) for nal in pps)
    if fields.profile_idc in _AVCC_EXT_PROFILES:
        parts.append(
            bytes(
                (
                    0xFC | fields.chroma_format_idc,
                    0xF8 | (fields.bit_depth_luma - 8),
                    0xF8 | (fields.bit_depth_chroma - 8),
                    0,  # numOfSequenceParameterSetExt
                )
            )
        )
    return b"".join(parts)


# --- Sequence parameter set (H.264 7.3.2.1.1) -------------------------------------


@dataclass(frozen=True, slots=True)
class SpsInfo:
    profile_idc: int
    constraint_flags: int
    level_idc: int
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class _SpsFields:
    profile_idc: int
    constraint_flags: int
    level_idc: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int


class BitReader:
    """MSB-first bit reader with Exp-Golomb codes; reads cost O(1) whatever the input size (H.264 and HEVC)."""

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data) * 8

    def u(self, n: int) -> int:
        if n == 0:
            return 0
        pos = self._pos
        stop = pos + n
        if stop > self._end:
            raise MalformedData("truncated bitstream")
        self._pos = stop
        last = (stop + 7) >> 3
        word = int.from_bytes(self._data[pos >> 3 : last], "big")
        return (word >> ((last << 3) - stop)) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise MalformedData("Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) >> 1 if k & 1 else -(k >> 1)


def rbsp(nal: bytes) -> bytes:
    """The NAL unit without emulation prevention bytes (00 00 03 -> 00 00)."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _parse_sps(sps: bytes) -> _SpsFields:
    if nal_type(sps) != NAL_SPS:
        raise MalformedData(f"NAL unit of type {nal_type(sps)} is not an SPS")
    bits = BitReader(rbsp(sps[1:]))
    profile_idc = bits.u(8)
    constraint_flags = bits.u(8)
    level_idc = bits.u(8)
    if bits.ue() > 31:
        raise MalformedData("seq_parameter_set_id out of range")
    chroma_format_idc, separate_planes, depth_luma, depth_chroma = 1, False, 8, 8
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = bits.ue()
        if chroma_format_idc > 3:
            raise MalformedData(f"chroma_format_idc {chroma_format_idc} out of range")
        if chroma_format_idc == 3:
            separate_planes = bool(bits.u(1))
        depth_luma = bits.ue() + 8
        depth_chroma = bits.ue() + 8
        if depth_luma > 14 or depth_chroma > 14:
            raise MalformedData("bit depth out of range")
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for i in range(12 if chroma_format_idc == 3 else 8):
                if bits.u(1):  # seq_scaling_list_present_flag[i]
                    _skip_scaling_list(bits, 16 if i < 6 else 64)
    if bits.ue() > 12:
        raise MalformedData("log2_max_frame_num_minus4 out of range")
    poc_type = bits.ue()
    if poc_type == 0:
        if bits.ue() > 12:
            raise MalformedData("log2_max_pic_order_cnt_lsb_minus4 out of range")
    elif poc_type == 1:
        bits.u(1)  # delta_pic_order_always_zero_flag
        bits.se()  # offset_for_non_ref_pic
        bits.se()  # offset_for_top_to_bottom_field
        cycle = bits.ue()
        if cycle > 255:
            raise MalformedData("num_ref_frames_in_pic_order_cnt_cycle out of range")
        for _ in range(cycle):
            bits.se()
    elif poc_type != 2:
        raise MalformedData(f"pic_order_cnt_type {poc_type} out of range")
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_map_units = bits.ue() + 1
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    crop_left = crop_right = crop_top = crop_bottom = 0
    if bits.u(1):  # frame_cropping_flag
        crop_left, crop_right, crop_top, crop_bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
    # Table 6-1 and equations 7-19..7-22: crop offsets count in chroma samples (and field rows).
    field_factor = 2 - frame_mbs_only
    if separate_planes or chroma_format_idc == 0:
        unit_x, unit_y = 1, field_factor
    else:
        unit_x = 1 if chroma_format_idc == 3 else 2
        unit_y = (2 if chroma_format_idc == 1 else 1) * field_factor
    width = width_mbs * 16 - unit_x * (crop_left + crop_right)
    height = field_factor * height_map_units * 16 - unit_y * (crop_top + crop_bottom)
    if width <= 0 or height <= 0:
        raise MalformedData(f"frame cropping leaves a {width}x{height} picture")
    return _SpsFields(
        profile_idc, constraint_flags, level_idc, chroma_format_idc, depth_luma, depth_chroma, width, height
    )


def _skip_scaling_list(bits: BitReader, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + bits.se()) & 0xFF
        if nxt:
            last = nxt


def sps_parse(sps: bytes) -> SpsInfo:
    """Profile, level and displayed (cropped) picture size of an SPS NAL unit (header byte included)."""
    fields = _parse_sps(bytes(sps))
    return SpsInfo(fields.profile_idc, fields.constraint_flags, fields.level_idc, fields.width, fields.height)


def profile_level_id(sps: bytes) -> str:
    """SDP profile-level-id (RFC 6184): profile_idc, constraint flags and level_idc as 6 hex digits."""
    sps = bytes(sps)
    if nal_type(sps) != NAL_SPS:
        raise MalformedData(f"NAL unit of type {nal_type(sps)} is not an SPS")
    head = rbsp(sps[1:8])[:3]
    if len(head) < 3:
        raise MalformedData(f"SPS too short ({len(sps)} bytes)")
    return head.hex()
