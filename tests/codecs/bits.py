"""Bit-level builders for hand-made H.264 and AAC fixtures (independent of the code under test)."""

from __future__ import annotations


class BitWriter:
    """MSB-first bit writer with Exp-Golomb codes."""

    def __init__(self) -> None:
        self.value = 0
        self.size = 0

    def u(self, n: int, v: int) -> BitWriter:
        assert 0 <= v < 1 << n or n == v == 0
        self.value = self.value << n | v
        self.size += n
        return self

    def ue(self, v: int) -> BitWriter:
        n = (v + 1).bit_length()
        return self.u(n - 1, 0).u(n, v + 1)

    def se(self, v: int) -> BitWriter:
        return self.ue(2 * v - 1 if v > 0 else -2 * v)

    def to_bytes(self) -> bytes:
        """Zero-padded to a byte boundary."""
        pad = -self.size % 8
        return (self.value << pad).to_bytes((self.size + pad) // 8, "big")

    def rbsp(self) -> bytes:
        """With rbsp_trailing_bits (stop bit, then zeros)."""
        self.u(1, 1)
        return self.to_bytes()


def escape(rbsp: bytes) -> bytes:
    """Insert emulation prevention bytes (H.264 7.4.1)."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def unescape(nal: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for b in nal:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


HIGH = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135, 144}  # 144: withdrawn High 4:4:4


def make_sps(
    *,
    profile_idc: int = 66,
    constraint_flags: int = 0,
    level_idc: int = 30,
    chroma_format_idc: int = 1,
    separate_planes: int = 0,
    bit_depth_luma: int = 8,
    bit_depth_chroma: int = 8,
    scaling_lists: list[list[int] | None] | None = None,
    poc_type: int = 0,
    poc_cycle: tuple[int, ...] = (),
    width_mbs: int = 40,
    height_map_units: int = 23,
    frame_mbs_only: int = 1,
    crop: tuple[int, int, int, int] | None = None,
    vui: bool = False,
) -> bytes:
    """An SPS NAL unit (header 0x67) from its fields; scaling_lists holds delta_scale lists (None: absent)."""
    w = BitWriter().u(8, profile_idc).u(8, constraint_flags).u(8, level_idc).ue(0)
    if profile_idc in HIGH:
        w.ue(chroma_format_idc)
        if chroma_format_idc == 3:
            w.u(1, separate_planes)
        w.ue(bit_depth_luma - 8).ue(bit_depth_chroma - 8).u(1, 0)
        w.u(1, scaling_lists is not None)
        for deltas in scaling_lists or ():
            w.u(1, deltas is not None)
            for d in deltas or ():
                w.se(d)
    w.ue(0).ue(poc_type)  # log2_max_frame_num_minus4
    if poc_type == 0:
        w.ue(2)
    elif poc_type == 1:
        w.u(1, 0).se(-2).se(1).ue(len(poc_cycle))
        for offset in poc_cycle:
            w.se(offset)
    w.ue(1).u(1, 0).ue(width_mbs - 1).ue(height_map_units - 1).u(1, frame_mbs_only)
    if not frame_mbs_only:
        w.u(1, 1)  # mb_adaptive_frame_field_flag
    w.u(1, 1).u(1, crop is not None)
    for offset in crop or ():
        w.ue(offset)
    w.u(1, vui)
    if vui:
        w.u(1, 1).u(8, 1)  # aspect_ratio_idc 1 (square), then nothing else present
        w.u(8, 0)
    return b"\x67" + escape(w.rbsp())


def flat_scaling_lists(count: int) -> list[list[int] | None]:
    """Delta lists that all decode to the flat matrix (16 everywhere), in both long and short forms."""
    lists: list[list[int] | None] = []
    for i in range(count):
        size = 16 if i < 6 else 64
        lists.append([8] + [0] * (size - 1) if i % 2 == 0 else [8, -16])  # -16: nextScale 0, repeat 16
    return lists


def with_flat_scaling_matrix(sps: bytes) -> bytes:
    """A High profile SPS rewritten to carry an explicit flat scaling matrix (decodes identically)."""
    rbsp = unescape(sps[1:])
    value, nbits = int.from_bytes(rbsp, "big"), len(rbsp) * 8
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        pos += n
        return (value >> (nbits - pos)) & ((1 << n) - 1)

    def read_ue() -> int:
        zeros = 0
        while not read(1):
            zeros += 1
        return (1 << zeros) - 1 + read(zeros)

    read(24)
    read_ue()
    chroma = read_ue()
    if chroma == 3:
        read(1)
    read_ue()
    read_ue()
    read(1)
    flag_pos = pos
    assert read(1) == 0, "SPS already has a scaling matrix"
    trailing = (value & -value).bit_length() - 1  # zero bits after the stop bit
    rest_len = nbits - trailing - 1 - flag_pos - 1
    w = BitWriter().u(flag_pos, value >> (nbits - flag_pos)).u(1, 1)
    for deltas in flat_scaling_lists(12 if chroma == 3 else 8):
        w.u(1, 1)
        for d in deltas or ():
            w.se(d)
    w.u(rest_len, (value >> (trailing + 1)) & ((1 << rest_len) - 1))
    return sps[:1] + escape(w.rbsp())


def audio_specific_config(object_type: int, index: int, channel_config: int, rate: int = 0,
                          tail: bytes = b"") -> bytes:
    """An AAC AudioSpecificConfig (ISO 14496-3 1.6.2.1): object type (escaped past 31), sampling
    frequency index (15: an explicit 24-bit rate), channel configuration, three zero GASpecificConfig bits."""
    w = BitWriter()
    if object_type >= 32:
        w.u(5, 31).u(6, object_type - 32)
    else:
        w.u(5, object_type)
    w.u(4, index)
    if index == 15:
        w.u(24, rate)
    return w.u(4, channel_config).u(3, 0).to_bytes() + tail
