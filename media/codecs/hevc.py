"""HEVC helpers, sans-I/O: the SPS out of an HEVCDecoderConfigurationRecord (`hvcC`, ISO/IEC
14496-15 8.3.3.1) and the picture size it codes (H.265 7.3.2.2), what an MP4 sample entry states.
Units carry HEVC as the hub carries H.264: length-prefixed NAL units, the record as config."""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .avc import BitReader, rbsp
from .errors import MalformedData

NAL_SPS = 33
_RECORD_HEADER = 23  # bytes before numOfArrays' arrays
_GENERAL_PROFILE_BITS = 88  # profile space, tier, idc, 32 compatibility flags, 48 constraint bits
_SUB_WIDTH = {0: 1, 1: 2, 2: 2, 3: 1}  # by chroma_format_idc (Table 6-1): SubWidthC
_SUB_HEIGHT = {0: 1, 1: 2, 2: 1, 3: 1}  # SubHeightC


@dataclass(frozen=True, slots=True)
class HevcSize:
    width: int
    height: int


def record_sps(record: bytes) -> bytes:
    """The first SPS NAL unit in an hvcC record; MalformedData when it has none or is cut short."""
    if len(record) < _RECORD_HEADER or record[0] != 1:
        raise MalformedData(f"not an HEVCDecoderConfigurationRecord ({len(record)} bytes)")
    pos, arrays = _RECORD_HEADER, record[22]
    for _ in range(arrays):
        if pos + 3 > len(record):
            raise MalformedData("HEVCDecoderConfigurationRecord: truncated array")
        nal_type = record[pos] & 0x3F
        (count,) = struct.unpack_from(">H", record, pos + 1)
        pos += 3
        for _ in range(count):
            if pos + 2 > len(record):
                raise MalformedData("HEVCDecoderConfigurationRecord: truncated NAL unit length")
            (size,) = struct.unpack_from(">H", record, pos)
            nal = record[pos + 2:pos + 2 + size]
            if len(nal) != size:
                raise MalformedData("HEVCDecoderConfigurationRecord: NAL unit overruns the record")
            if nal_type == NAL_SPS and size > 2:
                return nal
            pos += 2 + size
    raise MalformedData("HEVCDecoderConfigurationRecord has no SPS")


def sps_size(sps: bytes) -> HevcSize:
    """The displayed picture size of an SPS NAL unit (its conformance window applied)."""
    if len(sps) < 3 or (sps[0] >> 1) & 0x3F != NAL_SPS:
        raise MalformedData("not an HEVC SPS NAL unit")
    bits = BitReader(rbsp(sps[2:]))
    bits.u(4)  # sps_video_parameter_set_id
    sub_layers = bits.u(3)  # sps_max_sub_layers_minus1
    bits.u(1)  # sps_temporal_id_nesting_flag
    _skip_profile_tier_level(bits, sub_layers)
    bits.ue()  # sps_seq_parameter_set_id
    chroma = bits.ue()
    if chroma > 3:
        raise MalformedData(f"HEVC SPS: chroma_format_idc {chroma}")
    if chroma == 3:
        bits.u(1)  # separate_colour_plane_flag
    width, height = bits.ue(), bits.ue()
    if bits.u(1):  # conformance_window_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        width -= _SUB_WIDTH[chroma] * (left + right)
        height -= _SUB_HEIGHT[chroma] * (top + bottom)
    if not (0 < width <= 16384 and 0 < height <= 16384):
        raise MalformedData(f"HEVC SPS: picture size {width}x{height}")
    return HevcSize(width, height)


def _skip_profile_tier_level(bits: BitReader, sub_layers: int) -> None:
    """profile_tier_level(1, sps_max_sub_layers_minus1), H.265 7.3.3."""
    bits.u(_GENERAL_PROFILE_BITS)
    bits.u(8)  # general_level_idc
    present = [(bits.u(1), bits.u(1)) for _ in range(sub_layers)]
    if sub_layers:
        bits.u(2 * (8 - sub_layers))  # reserved_zero_2bits
    for profile, level in present:
        bits.u(_GENERAL_PROFILE_BITS * profile)
        bits.u(8 * level)
