"""H.264 helpers against real libx264 output, with FFmpeg's decoder and MP4 muxer as the judges."""

from __future__ import annotations

import pytest

from media.codecs import avc
from tests.codecs.bits import with_flat_scaling_matrix
from tests.codecs.encoders import h264_decode, h264_mp4_avcc, h264_packets

# (width, height, x264 profile, pix_fmt, extra options) -> (profile_idc, constraint byte, level_idc)
STREAMS = {
    (640, 360, "baseline", "yuv420p", ()): (66, 0xC0, 30),
    (640, 360, "main", "yuv420p", ()): (77, 0x40, 30),
    (640, 360, "high", "yuv420p", ()): (100, 0x00, 30),
    (1280, 720, "baseline", "yuv420p", ()): (66, 0xC0, 31),
    (1280, 720, "main", "yuv420p", ()): (77, 0x40, 31),
    (1280, 720, "high", "yuv420p", ()): (100, 0x00, 31),
    (1280, 720, "high", "yuv420p", (("flags", "+ildct"),)): (100, 0x00, 32),  # interlaced: frame_mbs_only 0
    (642, 364, "main", "yuv420p", (("flags", "+ildct"),)): (77, 0x40, 30),  # field cropping
    (640, 360, "high10", "yuv420p10le", ()): (110, 0x00, 30),
    (640, 360, "high422", "yuv422p", ()): (122, 0x00, 30),
    (642, 362, "high422", "yuv422p", ()): (122, 0x00, 30),
    (641, 361, "high444", "yuv444p", ()): (244, 0x00, 30),  # 1-pixel crop units
}
IDS = [f"{w}x{h}-{p}-{fmt}{'-interlaced' if opts else ''}" for (w, h, p, fmt, opts) in STREAMS]

_cache: dict[tuple, list[bytes]] = {}


def _packets(key: tuple) -> list[bytes]:
    if key not in _cache:
        width, height, profile, pix_fmt, options = key
        _cache[key] = h264_packets(width, height, profile, pix_fmt, **dict(options))
    return _cache[key]


def _frames_without_parameter_sets(packets: list[bytes]) -> list[bytes]:
    """AVCC access units with the inline SPS/PPS removed, so only the configuration record provides them."""
    out = []
    for packet in packets:
        nals = [n for n in avc.split_annexb(packet) if avc.nal_type(n) not in (avc.NAL_SPS, avc.NAL_PPS)]
        out.append(b"".join(len(n).to_bytes(4, "big") + n for n in nals))
    return out


@pytest.mark.parametrize("key", STREAMS, ids=IDS)
def test_sps_parse_x264(key: tuple) -> None:
    width, height = key[:2]
    profile_idc, constraints, level_idc = STREAMS[key]
    nals = avc.split_annexb(_packets(key)[0])
    assert avc.has_idr(nals)
    sps, pps = avc.parameter_sets(nals)
    assert len(sps) == len(pps) == 1
    assert avc.sps_parse(sps[0]) == avc.SpsInfo(profile_idc, constraints, level_idc, width, height)
    assert avc.profile_level_id(sps[0]) == f"{profile_idc:02x}{constraints:02x}{level_idc:02x}"


@pytest.mark.parametrize("key", STREAMS, ids=IDS)
def test_decoder_config_build_decodes(key: tuple) -> None:
    packets = _packets(key)
    sps, pps = avc.parameter_sets(avc.split_annexb(packets[0]))
    record = avc.decoder_config_build(sps, pps)
    assert avc.decoder_config_parse(record) == avc.AvcConfig(tuple(sps), tuple(pps), 4)
    pictures = h264_decode(_frames_without_parameter_sets(packets), record)
    assert len(pictures) == len(packets) == 3
    assert pictures == h264_decode(packets)  # same pictures as from the Annex B stream itself
    assert pictures[0][0] == f"{key[0]}x{key[1]}".encode()


@pytest.mark.parametrize("key", STREAMS, ids=IDS)
def test_framing_round_trip_real_stream(key: tuple) -> None:
    for packet in _packets(key):
        nals = avc.split_annexb(packet)
        avcc = avc.annexb_to_avcc(packet)
        assert avc.split_avcc(avcc) == nals
        assert avc.annexb_to_avcc(avc.avcc_to_annexb(avcc)) == avcc
        assert b"".join(nals) == packet.replace(b"\x00\x00\x00\x01", b"").replace(b"\x00\x00\x01", b"")


@pytest.mark.parametrize(("profile", "pix_fmt"), [("high", "yuv420p"), ("high444", "yuv444p")])
def test_sps_scaling_matrix_decodes(profile: str, pix_fmt: str) -> None:
    # x264 never writes SPS scaling lists, so add an explicit flat matrix: same pictures, more SPS to skip.
    packets = h264_packets(1280, 720, profile, pix_fmt)
    sps, pps = avc.parameter_sets(avc.split_annexb(packets[0]))
    flat = with_flat_scaling_matrix(sps[0])
    assert len(flat) > len(sps[0]) + 20
    assert avc.sps_parse(flat) == avc.sps_parse(sps[0])
    pictures = h264_decode(_frames_without_parameter_sets(packets), avc.decoder_config_build([flat], pps))
    assert pictures == h264_decode(packets)


@pytest.mark.parametrize(
    ("profile", "pix_fmt"),
    [("baseline", "yuv420p"), ("main", "yuv420p"), ("high", "yuv420p"), ("high10", "yuv420p10le"),
     ("high422", "yuv422p")],
)  # fmt: skip
def test_decoder_config_build_matches_ffmpeg_mp4_muxer(profile: str, pix_fmt: str) -> None:
    annexb, ffmpeg_avcc = h264_mp4_avcc(640, 360, profile, pix_fmt)
    sps, pps = avc.parameter_sets(avc.split_annexb(annexb))
    assert avc.decoder_config_build(sps, pps) == ffmpeg_avcc
    assert avc.decoder_config_parse(ffmpeg_avcc) == avc.AvcConfig(tuple(sps), tuple(pps), 4)


def test_decoder_config_build_high444_has_no_extension() -> None:
    # FFmpeg writes the chroma/bit depth extension for every profile but 66/77/88; the record built here
    # only does for 100/110/122/144, so for High 4:4:4 Predictive it is FFmpeg's minus those 4 bytes.
    annexb, ffmpeg_avcc = h264_mp4_avcc(640, 360, "high444", "yuv444p")
    sps, pps = avc.parameter_sets(avc.split_annexb(annexb))
    assert ffmpeg_avcc[-4:] == b"\xff\xf8\xf8\x00"
    assert avc.decoder_config_build(sps, pps) == ffmpeg_avcc[:-4]
