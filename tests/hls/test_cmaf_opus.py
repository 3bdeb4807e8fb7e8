"""Opus in CMAF (a WebRTC room's H.264 + Opus in LL-HLS, no AAC transcode): real libopus packets
(PyAV, a 48 kHz stereo sine in 20 ms frames) and real x264 H.264 (no B-frames, as WebRTC sends),
through `CmafWriter` and through a running media plane's hub and LL-HLS route, read back with the
ffmpeg CLI: init + parts decode without a line on stderr, ffprobe counts every Opus packet written
and every picture, and the `dOps` box holds the OpusHead's fields (or the codec-name defaults)."""
from __future__ import annotations

import asyncio
import json
import math
import re
import struct
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import pytest

from media.codecs import opus
from media.hls.cmaf import CmafPart, CmafWriter, opus_config
from media.hub.unit import AUDIO, TIME_BASE, VIDEO, AccessUnit
from tests.support.flv_source import access_units, ffmpeg_flv
from tests.support.media import assert_no_decode_errors
from tests.support.procs import require_tool

from .test_llhls_serve import get

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz
FRAME_TICKS = FRAME * TIME_BASE // RATE  # 1800
PART_TICKS = TIME_BASE // 5
ROOM = "opusroom"
# dOps of a track from the codec name alone: Version 0, 2 channels, PreSkip 312, 48000 Hz, gain 0, family 0.
DEFAULT_DOPS = bytes.fromhex("00 02 0138 0000bb80 0000 00")


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: these tests need no Django."""


@pytest.fixture(scope="module")
def opus_packets() -> tuple[bytes, list[AccessUnit]]:
    """(libopus's OpusHead, 3 s of 440 Hz stereo Opus as 20 ms hub units from dts 0)."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = RATE, "stereo", "s16"
    encoder.bit_rate = 64_000
    encoder.time_base = Fraction(1, RATE)
    encoder.open()
    assert encoder.frame_size == FRAME
    packets = []
    for index in range(3 * RATE // FRAME):
        tone = [round(math.sin(2 * math.pi * 440 * (i + index * FRAME) / RATE) * 8000) for i in range(FRAME)]
        frame = av.AudioFrame(format="s16", layout="stereo", samples=FRAME)
        frame.planes[0].update(struct.pack(f"<{2 * FRAME}h", *(v for v in tone for _ in range(2))))
        frame.sample_rate, frame.pts, frame.time_base = RATE, index * FRAME, Fraction(1, RATE)
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    head = bytes(encoder.extradata)
    first = packets[0].pts
    units = [AccessUnit(AUDIO, "opus", (p.pts - first) * TIME_BASE // RATE, (p.pts - first) * TIME_BASE // RATE,
                        bytes(p), keyframe=True) for p in packets if p.size]
    assert {b.dts - a.dts for a, b in zip(units, units[1:], strict=False)} == {FRAME_TICKS}
    return head, units


@pytest.fixture(scope="module")
def h264_units() -> list[AccessUnit]:
    """3 s of 320x180 30 fps x264 H.264, 1 s GOP, no B-frames (a WebRTC browser's): config + pictures."""
    return [u for u in access_units(ffmpeg_flv(seconds=3, gop=30, bframes=0, audio=False)) if u.kind == VIDEO]


# --- Reading boxes ------------------------------------------------------------------------------


def _boxes(data: bytes, offset: int = 0, end: int | None = None):
    end = len(data) if end is None else end
    while offset < end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        assert size >= 8, (kind, size)
        yield kind, offset + 8, offset + size
        offset += size


def _find(data: bytes, path: list[bytes], offset: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of the payload of every box at `path` (child box kinds from the top level)."""
    kind, *rest = path
    found = []
    for box, start, stop in _boxes(data, offset, end):
        if box == kind:
            found += _find(data, rest, start, stop) if rest else [(start, stop)]
    return found


def _opus_entry(init: bytes) -> tuple[int, int, int, bytes]:
    """(channelcount, samplesize, samplerate 16.16, dOps payload) of the audio track's sample entry."""
    entries = [e for start, end in _find(init, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"])
               for e in _boxes(init, start + 8, end)]  # after the full box header and the entry count
    [(kind, entry, entry_end)] = [e for e in entries if e[0] == b"Opus"]
    channels, sample_size, _, _, rate = struct.unpack_from(">HHHHI", init, entry + 16)
    [(dops, dops_end)] = _find(init, [b"dOps"], entry + 28, entry_end)
    return channels, sample_size, rate, init[dops:dops_end]


def _timescales(init: bytes) -> list[int]:
    return [struct.unpack_from(">I", init, start + 12)[0] for start, _ in _find(init, [b"moov", b"trak", b"mdia",
                                                                                      b"mdhd"])]


def _audio_durations(fragment: bytes) -> list[int]:
    """Every sample duration of the audio track (id 2) in a run of moof+mdat, on its own clock."""
    durations = []
    for start, end in _find(fragment, [b"moof", b"traf"]):
        boxes = {k: s for k, s, _ in _boxes(fragment, start, end)}
        if struct.unpack_from(">I", fragment, boxes[b"tfhd"] + 4)[0] != 2:
            continue
        trun = boxes[b"trun"]
        flags = struct.unpack_from(">I", fragment, trun)[0] & 0xFFFFFF
        count = struct.unpack_from(">I", fragment, trun + 4)[0]
        assert flags & 0x100  # sample durations present
        row = 4 * bin(flags & 0xF00).count("1")
        durations += [struct.unpack_from(">I", fragment, trun + 12 + i * row)[0] for i in range(count)]
    return durations


# --- Reading back with ffmpeg -----------------------------------------------------------------


def _decode_silently(path: Path) -> None:
    result = subprocess.run([require_tool("ffmpeg"), "-v", "error", "-i", str(path), "-f", "null", "-"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
    assert_no_decode_errors(result, path)
    assert result.stderr == "", result.stderr[-1500:]


def _probe(path: Path) -> dict[str, dict]:
    """ffprobe -count_frames: per track kind, its codec, channels, sample rate and decoded frames."""
    result = subprocess.run([require_tool("ffprobe"), "-v", "error", "-count_frames", "-show_entries",
                             "stream=codec_type,codec_name,channels,sample_rate,nb_read_frames", "-of", "json",
                             str(path)],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
    assert_no_decode_errors(result, path)
    assert result.stderr == "", result.stderr[-1500:]
    return {s["codec_type"]: s for s in json.loads(result.stdout)["streams"]}


def _audio_pts(path: Path) -> list[int]:
    result = subprocess.run([require_tool("ffprobe"), "-v", "error", "-select_streams", "a:0", "-show_entries",
                             "packet=pts", "-of", "json", str(path)],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
    assert_no_decode_errors(result, path)
    return [int(p["pts"]) for p in json.loads(result.stdout)["packets"]]


def _interleave(video: list[AccessUnit], audio: list[AccessUnit]) -> list[AccessUnit]:
    return sorted(video + audio, key=lambda u: (not u.config, u.dts, u.kind != VIDEO))


def _write_all(writer: CmafWriter, units: list[AccessUnit]) -> list[CmafPart]:
    """Push every unit, cutting a part before a video unit ~200 ms past the part's start or a keyframe."""
    parts = []
    for unit in units:
        writer.push(unit)
        start = writer.pending_start()
        if unit.kind == VIDEO and start is not None and start != unit.dts and (
                unit.keyframe or unit.dts - start >= PART_TICKS):
            part = writer.flush()
            assert part is not None
            parts.append(part)
    if (last := writer.finish()) is not None:
        parts.append(last)
    return parts


# --- The writer ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["media unit", "empty config", "opus_config"])
def test_init_from_the_codec_name_alone(form):
    """WebRTC's opus/48000/2 comes without an OpusHead: stereo, PreSkip 312, 48 kHz, family 0."""
    unit = {"media unit": AccessUnit(AUDIO, "opus", 0, 0, b"\xfc\xff\xfe", keyframe=True),
            "empty config": AccessUnit(AUDIO, "opus", 0, 0, b"", config=True),
            "opus_config": opus_config()}[form]
    writer = CmafWriter([unit])
    assert _opus_entry(writer.init) == (2, 16, RATE << 16, DEFAULT_DOPS)
    assert _timescales(writer.init) == [RATE]
    # the same init as from the OpusHead a WebRTC source (sfu/to_hub.py) writes into the hub
    assert writer.init == CmafWriter([AccessUnit(AUDIO, "opus", 0, 0, opus.opus_head(), config=True)]).init


def test_dops_from_the_encoders_opus_head(opus_packets):
    head, _ = opus_packets
    channels, pre_skip, input_rate, gain, family = struct.unpack_from("<xxxxxxxxxBHIhB", head)
    assert (channels, input_rate, family) == (2, RATE, 0)
    writer = CmafWriter([AccessUnit(AUDIO, "opus", 0, 0, head, config=True)])
    dops = struct.pack(">BBHIhB", 0, channels, pre_skip, input_rate, gain, family)
    assert _opus_entry(writer.init) == (2, 16, RATE << 16, dops)
    assert _opus_entry(CmafWriter([opus_config(channels=1)]).init)[3] == bytes.fromhex("00 01 0138 0000bb80 0000 00")


@pytest.mark.parametrize("with_head", [False, True], ids=["codec-name", "opus-head"])
def test_h264_opus_decodes_with_every_frame(tmp_path, h264_units, opus_packets, with_head):
    """init + every part, and each segment alone, decode silently; every Opus packet and picture is counted."""
    head, audio = opus_packets
    opus_unit = AccessUnit(AUDIO, "opus", 0, 0, head, config=True) if with_head else audio[0]
    writer = CmafWriter([h264_units[0], opus_unit])
    assert _timescales(writer.init) == [TIME_BASE, RATE]
    assert _opus_entry(writer.init)[3] == (DEFAULT_DOPS if not with_head else _opus_entry(writer.init)[3])
    video = h264_units[1:]
    parts = _write_all(writer, _interleave(video, audio))
    assert sum(1 for p in parts if p.independent) == 3  # a segment a GOP
    path = tmp_path / "stream.mp4"
    path.write_bytes(writer.init + b"".join(p.data for p in parts))
    _decode_silently(path)
    probe = _probe(path)
    assert probe["audio"]["codec_name"] == "opus" and probe["audio"]["channels"] == 2
    assert probe["audio"]["sample_rate"] == str(RATE)
    assert int(probe["audio"]["nb_read_frames"]) == len(audio)
    assert int(probe["video"]["nb_read_frames"]) == len(video)
    # Durations from the 90 kHz timestamps: 1800 ticks are 960 samples.
    assert _audio_durations(b"".join(p.data for p in parts)) == [FRAME] * len(audio)
    # Each segment (init + its parts) alone, as a player fetches it.
    starts = [i for i, p in enumerate(parts) if p.independent] + [len(parts)]
    counted = 0
    for index, (a, b) in enumerate(zip(starts, starts[1:], strict=False)):
        segment = tmp_path / f"seg{index}.mp4"
        segment.write_bytes(writer.init + b"".join(p.data for p in parts[a:b]))
        _decode_silently(segment)
        counted += int(_probe(segment)["audio"]["nb_read_frames"])
    assert counted == len(audio)


def test_a_lost_packet_is_a_longer_sample(tmp_path, h264_units, opus_packets):
    """A 20 ms gap (one packet lost on the way) is in the sample durations, not squeezed out."""
    _, audio = opus_packets
    lost = audio[:50] + audio[51:]
    writer = CmafWriter([h264_units[0], opus_config()])
    parts = _write_all(writer, _interleave(h264_units[1:], lost))
    data = b"".join(p.data for p in parts)
    durations = _audio_durations(data)
    assert durations == [FRAME] * 49 + [2 * FRAME] + [FRAME] * (len(lost) - 50)
    path = tmp_path / "lost.mp4"
    path.write_bytes(writer.init + data)
    _decode_silently(path)
    assert int(_probe(path)["audio"]["nb_read_frames"]) == len(lost)
    assert _audio_pts(path) == [u.dts * RATE // TIME_BASE for u in lost]


# --- Through the hub and the LL-HLS route (a WebRTC publisher's room) ------------------------


@pytest.mark.parametrize("opus_head", ["none", "after the first picture"])
async def test_webrtc_room_gets_ll_hls_with_its_opus(plane, tmp_path, h264_units, opus_packets, opus_head):
    """A room whose source declares h264 + opus (as sfu/to_hub.py does) and whose first Opus packet
    (with or without an OpusHead before it) comes after the first keyframe: LL-HLS has its audio."""
    _, audio = opus_packets
    video = h264_units[1:]
    first_picture = video[0].dts
    audio = [u for u in audio if u.dts > first_picture]  # audio starts after the first picture
    stream = plane.registry.start(ROOM, protocol="webrtc")
    stream.declare(VIDEO, "h264")
    stream.declare(AUDIO, "opus")
    stream.write(h264_units[0])
    late = [opus_config(audio[0].dts)] if opus_head != "none" else []
    for unit in _interleave(video, late + audio):
        stream.write(unit)
        await asyncio.sleep(0)
    ll = plane.llhls.streams[ROOM]
    while ll.reader.queued:
        await asyncio.sleep(0.005)
    stream.close("publisher_left")
    for _ in range(200):
        if ll.playlist.ended:
            break
        await asyncio.sleep(0.01)
    assert ll.failed is None and ll.playlist.ended

    port = plane.http_port
    status, body = await _body(port, f"/hls/{ROOM}/ll.m3u8")
    assert status == 200
    playlist = body.decode()
    assert playlist.rstrip().endswith("#EXT-X-ENDLIST")
    segments = [int(m) for m in re.findall(r"^seg([0-9]+)\.m4s$", playlist, re.M)]
    assert len(segments) == 3 and segments[0] == ll.first_msn  # nothing evicted: every unit is in them
    assert f'#EXT-X-MAP:URI="init{ll.first_msn}.mp4"' in playlist
    status, init = await _body(port, f"/hls/{ROOM}/init{ll.first_msn}.mp4")
    assert status == 200
    assert _opus_entry(init) == (2, 16, RATE << 16, DEFAULT_DOPS)
    whole = init
    for msn in segments:
        status, segment = await _body(port, f"/hls/{ROOM}/seg{msn}.m4s")
        assert status == 200
        path = tmp_path / f"seg{msn}.mp4"
        path.write_bytes(init + segment)
        _decode_silently(path)
        whole += segment
    path = tmp_path / "all.mp4"
    path.write_bytes(whole)
    _decode_silently(path)
    probe = _probe(path)
    assert probe["audio"]["codec_name"] == "opus"
    assert int(probe["audio"]["nb_read_frames"]) == len(audio)
    assert int(probe["video"]["nb_read_frames"]) == len(video)
    assert _audio_durations(whole[len(init):]) == [FRAME] * len(audio)


async def _body(port: int, path: str) -> tuple[int, bytes]:
    status, _, body = await get(port, path)
    return status, body
