"""Video -> H.264 without B-frames on real encoder output (ffmpeg), proved with FFmpeg and ffprobe."""
from __future__ import annotations

import functools
import json
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import av
import pytest

from media.bridges.video import VideoToH264
from media.codecs import avc, flv
from media.codecs.flv_units import unit_tag_body
from media.hub.unit import TIME_BASE, VIDEO, AccessUnit
from tests.support.flv_source import access_units, ffmpeg_flv
from tests.support.media import assert_no_decode_errors
from tests.support.procs import require_tool

FRAME = TIME_BASE // 30
FLV_JITTER = 90  # FLV's millisecond timestamps put 30 fps frames 2970 or 3060 ticks apart


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: no Django here."""


def h264_units(seconds: int = 5) -> tuple[bytes, list[AccessUnit]]:
    """What an RTMP publisher sends: x264 with 3 B-frames, 1 s GOPs; (config payload, frames)."""
    units = [u for u in access_units(ffmpeg_flv(seconds=seconds, size="640x360", bframes=3, audio=False))
             if u.kind == VIDEO]
    assert units[0].config and all(not u.config for u in units[1:])
    return units[0].payload, units[1:]


@functools.cache
def encoded(codec: str, *args: str, size: str = "320x240", seconds: int = 2) -> tuple[bytes | None, list[AccessUnit]]:
    """ffmpeg's encoding of a test pattern, demuxed by FFmpeg into hub units (MP4/WebM give the
    canonical payloads: length-prefixed NALs with their configuration record, raw VP8/VP9 frames,
    low-overhead AV1 OBUs with an av1C)."""
    path = Path(tempfile.mkdtemp(prefix="mv-video-")) / ("src.webm" if codec.startswith("vp") else "src.mp4")
    subprocess.run([require_tool("ffmpeg"), "-y", "-loglevel", "error", "-f", "lavfi",
                    "-i", f"testsrc2=size={size}:rate=30", "-t", str(seconds), *args, str(path)],
                   check=True, timeout=120)
    units = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        config, tick = stream.codec_context.extradata, stream.time_base * TIME_BASE
        for packet in container.demux(stream):
            if packet.size:
                dts, pts = round(packet.dts * tick), round(packet.pts * tick)
                units.append(AccessUnit(VIDEO, codec, dts, pts, bytes(packet), keyframe=packet.is_keyframe))
    return (bytes(config) if config else None), units


def convert(bridge: VideoToH264, units: list[AccessUnit]) -> list[AccessUnit]:
    return [out for unit in units for out in bridge.feed(unit)]


def probe(out: list[AccessUnit]) -> dict:
    """Writes the units as an HTTP-FLV viewer gets them, decodes that with FFmpeg (which must not
    complain) and returns ffprobe's view: the stream and its frames' picture types."""
    path = Path(tempfile.mkdtemp(prefix="mv-h264-")) / "out.flv"
    tags = [flv.flv_tag(flv.TAG_VIDEO, unit.ms, unit_tag_body(unit)) for unit in out]
    path.write_bytes(flv.flv_header(audio=False, video=True) + b"".join(tags))
    decoded = subprocess.run([require_tool("ffmpeg"), "-v", "error", "-i", str(path), "-f", "null", "-"],
                             capture_output=True, text=True, timeout=60)
    assert_no_decode_errors(decoded)
    shown = subprocess.run([require_tool("ffprobe"), "-v", "error", "-count_frames", "-of", "json",
                            "-show_entries", "stream=codec_name,profile,width,height,nb_read_frames:frame=pict_type",
                            str(path)], capture_output=True, text=True, timeout=60)
    assert_no_decode_errors(shown)
    result = json.loads(shown.stdout)
    return {**result["streams"][0], "pict_types": [frame["pict_type"] for frame in result["frames"]]}


def x264_options(keyframe: AccessUnit) -> set[str]:
    """The settings x264 wrote into the SEI of its first frame ("... options: cabac=1 ref=1 ...")."""
    sei = next(n for n in avc.split_avcc(keyframe.payload) if avc.nal_type(n) == avc.NAL_SEI)
    return set(sei.split(b" options: ")[1].split(b"\x00")[0].decode().split())


def check_stream(out: list[AccessUnit], units: list[AccessUnit], size: tuple[int, int]) -> list[AccessUnit]:
    """The invariants of any bridge output fed `units`; returns its frames (config units left out)."""
    inputs = len(units)
    assert {(o.kind, o.codec) for o in out} == {(VIDEO, "h264")}
    assert out[0].config and out[1].keyframe and not out[1].config, "a config unit, then an IDR"
    assert avc.has_idr(avc.split_avcc(out[1].payload))
    config = avc.decoder_config_parse(out[0].payload)
    assert (avc.sps_parse(config.sps[0]).width, avc.sps_parse(config.sps[0]).height) == size
    frames = [o for o in out if not o.config]
    assert all(f.dts == f.pts for f in frames), "no B-frames: decode order is presentation order"
    assert all(a.pts < b.pts for a, b in zip(frames, frames[1:], strict=False)), "strictly increasing"
    # Every input's picture comes out, in presentation order, at the input's own time; only the last
    # few may still be inside (the decoder holds up to its reorder depth: 2 for x264's 3 B-frames
    # with B-pyramid, plus a frame in the encoder); none is missing before them.
    assert inputs - 4 <= len(frames) <= inputs, (len(frames), inputs)
    assert [f.pts for f in frames] == sorted(u.pts for u in units)[: len(frames)], "a picture is missing"
    shown = probe(out)
    assert (shown["codec_name"], shown["width"], shown["height"]) == ("h264", *size)
    assert int(shown["nb_read_frames"]) == len(shown["pict_types"]) == len(frames)
    assert "B" not in shown["pict_types"] and shown["pict_types"][0] == "I"
    return frames


def test_h264_with_b_frames_becomes_h264_without_on_the_source_clock():
    config, units = h264_units()
    bridge = VideoToH264("h264", config)
    assert (bridge.width, bridge.height) == (None, None)
    out = convert(bridge, units)
    frames = check_stream(out, units, (640, 360))
    assert (bridge.width, bridge.height) == (640, 360)
    assert [f.pts for f in frames] == sorted(u.pts for u in units)[: len(frames)], "the source's presentation times"
    assert avc.sps_parse(avc.decoder_config_parse(out[0].payload).sps[0]).profile_idc == 100  # High
    keys = [f.pts for f in frames if f.keyframe]
    assert keys[0] == frames[0].pts and len(keys) == 3  # 5 s of video: IDRs at 0, 2 and 4 s
    assert all(0 <= b - a - 2 * TIME_BASE <= FRAME + FLV_JITTER for a, b in zip(keys, keys[1:], strict=False))
    assert sum(1 for o in out if o.config) == 1  # x264 repeats the same SPS/PPS: one config unit
    # No B-frames, no keyframes of x264's own, and a VBV of 0.1 bit per pixel at 30 fps (691 kbit/s).
    assert {"bframes=0", "keyint=infinite", "scenecut=0", "rc_lookahead=0", "bitrate=691", "vbv_maxrate=691",
            "vbv_bufsize=691"} <= x264_options(out[1])
    assert (bridge.units_in, bridge.units_out, bridge.errors) == (len(units), len(out), 0)


def test_force_keyframe_makes_the_next_frame_an_idr_and_restarts_the_interval():
    config, units = h264_units()
    bridge = VideoToH264("h264", config, profile="baseline", bitrate=500_000)
    out = convert(bridge, units[:40])
    bridge.force_keyframe()
    after = convert(bridge, units[40:])
    assert after[0].keyframe and not after[0].config, "the next frame, without a new config unit"
    assert avc.has_idr(avc.split_avcc(after[0].payload)), "an IDR, not an open-GOP I frame"
    assert not any(o.keyframe for o in out[2:])
    keys = [o.pts for o in after if o.keyframe]
    assert 0 <= keys[1] - keys[0] - 2 * TIME_BASE <= FRAME + FLV_JITTER
    assert avc.sps_parse(avc.decoder_config_parse(out[0].payload).sps[0]).profile_idc == 66  # Baseline
    assert {"bitrate=500", "vbv_maxrate=500", "vbv_bufsize=500", "cabac=0"} <= x264_options(out[1])
    check_stream(out + after, units, (640, 360))


def test_live_from_decodes_the_gop_cache_but_encodes_only_the_live_frames():
    config, units = h264_units()
    start = next(i for i, u in enumerate(units) if u.keyframe and i > 0)  # a GOP cache starts on a keyframe
    live_from = units[start + 15].dts  # mid-GOP: the frames before it are needed as references
    bridge = VideoToH264("h264", config, live_from=live_from)
    out = convert(bridge, units[start:])
    live = [u for u in units[start:] if u.pts >= live_from]
    frames = check_stream(out, live, (640, 360))
    assert frames[0].pts >= live_from and frames[0].pts - live_from < 2 * FRAME


def test_config_units_and_a_corrupt_unit_do_not_stop_the_stream():
    config, units = h264_units()
    bridge = VideoToH264("h264", config)
    assert convert(bridge, units[:20])
    assert bridge.feed(AccessUnit(VIDEO, "h264", units[20].dts, units[20].dts, config, config=True)) == []
    corrupt = replace(units[21], payload=b"\x00\x00\x10\x00\x65" + b"\x55" * 100)  # overruns its length
    assert bridge.feed(corrupt) == []
    assert bridge.feed(replace(units[22], payload=b"")) == []
    assert bridge.errors == 1
    later = convert(bridge, units[23:])
    shown = sum(1 for o in later if not o.config)
    assert len(units) - 23 - 8 <= shown <= len(units) - 23, shown  # decoding goes on
    assert bridge.feed(AccessUnit(VIDEO, "h264", 0, 0, config, config=True)) == []


@pytest.mark.parametrize(("codec", "args", "size", "expected"), [
    ("hevc", ("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:bframes=3"), "320x240",
     (320, 240)),
    ("vp8", ("-c:v", "libvpx", "-deadline", "realtime"), "320x240", (320, 240)),
    ("vp8", ("-c:v", "libvpx", "-deadline", "realtime"), "321x181", (320, 180)),  # x264 4:2:0 needs even sizes
    ("vp9", ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"), "320x240", (320, 240)),
    ("av1", ("-c:v", "libaom-av1", "-usage", "realtime", "-cpu-used", "8"), "320x240", (320, 240)),
    ("h264", ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv444p"), "320x240", (320, 240)),  # reformatted
])
def test_other_codecs_become_h264(codec, args, size, expected):
    config, units = encoded(codec, *args, size=size)
    assert (config is None) == codec.startswith("vp")
    bridge = VideoToH264(codec, config)
    frames = check_stream(convert(bridge, units), units, expected)
    assert (bridge.width, bridge.height) == expected
    assert [f.pts for f in frames] == sorted(u.pts for u in units)[: len(frames)]
    assert bridge.errors == 0


def test_a_size_change_reopens_the_encoder_with_a_new_config():
    _, small = encoded("vp8", "-c:v", "libvpx", "-deadline", "realtime", size="320x240")
    _, large = encoded("vp8", "-c:v", "libvpx", "-deadline", "realtime", size="480x270", seconds=1)
    shift = small[-1].pts + FRAME
    large = [replace(u, dts=u.dts + shift, pts=u.pts + shift) for u in large]
    bridge = VideoToH264("vp8", None)
    out = convert(bridge, small + large)
    configs = [i for i, o in enumerate(out) if o.config]
    assert len(configs) == 2 and out[configs[1] + 1].keyframe and out[configs[1] + 1].pts == shift
    sps = avc.decoder_config_parse(out[configs[1]].payload).sps[0]
    assert (avc.sps_parse(sps).width, avc.sps_parse(sps).height) == (bridge.width, bridge.height) == (480, 270)
    assert len(out) == len(small) + len(large) + 2
