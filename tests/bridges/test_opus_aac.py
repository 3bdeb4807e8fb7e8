"""Opus -> AAC on real encoder output (libopus), decoded back with FFmpeg's AAC decoder."""
from __future__ import annotations

import array
import functools
import json
import math
import subprocess
import tempfile
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import pytest

from media.bridges.audio import OpusToAac
from media.codecs import aac, flv
from media.codecs.flv_units import unit_tag_body
from media.hub.unit import AUDIO, TIME_BASE, AccessUnit
from tests.support.media import assert_no_decode_errors, pyav_errors
from tests.support.procs import require_tool

OPUS_FRAME = 960  # 20 ms at 48 kHz: 1800 ticks
AAC_TICKS = 1024 * TIME_BASE // 48000  # 1920


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: no Django here."""


@functools.cache
def opus_packets(seconds: int = 3, tone_from: int = 0) -> tuple[bytes, tuple[bytes, ...]]:
    """(OpusHead, packets) of libopus encoding 20 ms stereo frames: silence, then from frame
    `tone_from` on a 440 Hz sine of amplitude 1/8."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48000, "stereo", "s16"
    encoder.bit_rate, encoder.time_base = 96_000, Fraction(1, 48000)
    packets = []
    for i in range(seconds * 50):
        first, amplitude = i * OPUS_FRAME, 4096 if i >= tone_from else 0
        tone = (round(amplitude * math.sin(2 * math.pi * 440 * (first + n) / 48000)) for n in range(OPUS_FRAME))
        frame = av.AudioFrame(format="s16", layout="stereo", samples=OPUS_FRAME)
        frame.planes[0].update(array.array("h", (x for x in tone for _ in range(2))).tobytes())
        frame.sample_rate, frame.pts = 48000, first
        packets += [bytes(packet) for packet in encoder.encode(frame)]
    return bytes(encoder.extradata), tuple(packets)


def opus_units(start: int = 0, seconds: int = 3, tone_from: int = 0) -> list[AccessUnit]:
    """What a WebRTC publisher writes into the hub: one Opus packet each 1800 ticks."""
    _, packets = opus_packets(seconds, tone_from)
    return [AccessUnit(AUDIO, "opus", start + i * 1800, start + i * 1800, p, keyframe=True)
            for i, p in enumerate(packets)]


def convert(bridge: OpusToAac, units: list[AccessUnit]) -> list[AccessUnit]:
    return [out for unit in units for out in bridge.feed(unit)]


def decoded_left_channel(config: AccessUnit, frames: list[AccessUnit]) -> list[float]:
    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = config.payload
    samples: list[float] = []
    with pyav_errors() as errors:
        for unit in frames:
            for frame in decoder.decode(av.Packet(unit.payload)):
                assert (frame.sample_rate, frame.layout.name, frame.format.name) == (48000, "stereo", "fltp")
                samples += array.array("f", bytes(frame.planes[0])[: frame.samples * 4])
    assert errors == [] and len(samples) == 1024 * len(frames), (errors, len(samples) / 1024, len(frames))
    return samples


def probe_flv(out: list[AccessUnit]) -> dict:
    """Writes the units as an HTTP-FLV viewer gets them; FFmpeg must decode that silently."""
    path = Path(tempfile.mkdtemp(prefix="mv-aac-")) / "out.flv"
    tags = [flv.flv_tag(flv.TAG_AUDIO, unit.ms, unit_tag_body(unit)) for unit in out]
    path.write_bytes(flv.flv_header(audio=True, video=False) + b"".join(tags))
    decoded = subprocess.run([require_tool("ffmpeg"), "-v", "error", "-i", str(path), "-f", "null", "-"],
                             capture_output=True, text=True, timeout=60)
    assert_no_decode_errors(decoded)
    shown = subprocess.run([require_tool("ffprobe"), "-v", "error", "-count_frames", "-of", "json", "-show_entries",
                            "stream=codec_name,profile,sample_rate,channels,nb_read_frames", str(path)],
                           capture_output=True, text=True, timeout=60)
    assert_no_decode_errors(shown)
    found = json.loads(shown.stdout)["streams"][0]
    assert int(found["nb_read_frames"]) == len([u for u in out if not u.config]), found  # every frame decodes
    return found


def test_opus_becomes_continuous_aac_frames_on_the_source_clock():
    head, _ = opus_packets()
    units = opus_units(start=10 * TIME_BASE)
    bridge = OpusToAac(head)
    out = convert(bridge, units)
    config, frames = out[0], out[1:]
    assert (config.kind, config.codec, config.config, config.keyframe) == (AUDIO, "aac", True, False)
    assert aac.config_parse(config.payload) == aac.AacConfig(object_type=2, sample_rate=48000, channels=2)
    assert config.payload == bridge.audio_specific_config and config.dts == frames[0].dts
    assert {(f.kind, f.codec, f.keyframe, f.config) for f in frames} == {(AUDIO, "aac", True, False)}
    assert all(f.dts == f.pts for f in frames)
    assert {b.dts - a.dts for a, b in zip(frames, frames[1:], strict=False)} == {AAC_TICKS}
    # Anchored on the source, one frame early: the encoder's 1024 priming samples come first.
    assert frames[0].dts == units[0].dts - AAC_TICKS
    # every 1024 samples of the Opus' 150 x 960, less the one the encoder still holds (measured 139
    # of 140.6: the priming frame first, the last partial frame and one more held)
    sent = len(units) * OPUS_FRAME / 1024
    assert math.floor(sent) - 1 <= len(frames) <= math.ceil(sent), (len(frames), sent)
    assert (bridge.units_in, bridge.units_out, bridge.errors) == (len(units), len(out), 0)

    samples = decoded_left_channel(config, frames)[2048:]  # past the encoder's priming and Opus' pre-skip
    peaks = [max(abs(x) for x in samples[i : i + 1024]) for i in range(0, len(samples) - 1024, 1024)]
    assert min(peaks) > 0.08 and sorted(peaks)[len(peaks) // 2] > 0.11, "the tone (amplitude 1/8) comes through"
    crossings = sum(1 for a, b in zip(samples, samples[1:], strict=False) if a < 0 <= b)
    assert abs(crossings / (len(samples) / 48000) - 440) < 5, "at 440 Hz"

    shown = probe_flv(out)
    assert (shown["codec_name"], shown["profile"], shown["sample_rate"], shown["channels"]) == ("aac", "LC", "48000", 2)
    assert int(shown["nb_read_frames"]) == len(frames)


def test_without_an_opus_head_a_stream_from_zero_starts_at_zero():
    units = opus_units(start=0)
    out = convert(OpusToAac(None, bitrate=64_000), units)
    assert out[0].config and (out[0].dts, out[1].dts) == (0, 0), "no negative timestamps"
    sent = len(units) * OPUS_FRAME / 1024
    assert math.floor(sent) - 1 <= len(out) - 1 <= math.ceil(sent), (len(out) - 1, sent)
    assert {b.dts - a.dts for a, b in zip(out[1:], out[2:], strict=False)} == {AAC_TICKS}
    probe_flv(out)


def test_jitter_is_ignored_and_a_gap_re_anchors_on_the_source():
    tone = 75  # the tone starts at 1.5 s
    units = opus_units(start=TIME_BASE, tone_from=tone)
    gap = 2 * TIME_BASE  # the publisher's audio stops for 2 s, 10 packets before the tone
    units = [replace(u, dts=u.dts + gap, pts=u.pts + gap) if i >= tone - 10 else u for i, u in enumerate(units)]
    jittered = [replace(u, dts=u.dts + (i % 3 - 1) * 90, pts=u.pts + (i % 3 - 1) * 90)  # +-1 ms
                for i, u in enumerate(units)]
    out = convert(OpusToAac(None), jittered)
    frames = out[1:]
    steps = [b.dts - a.dts for a, b in zip(frames, frames[1:], strict=False)]
    jumps = [step for step in steps if step != AAC_TICKS]
    assert len(jumps) == 1 and abs(jumps[0] - AAC_TICKS - gap) < AAC_TICKS
    # Where the tone starts in the output: on the source's clock again, late only by Opus' own
    # 312-sample pre-skip (6.5 ms), which the source's timestamps do not account for either.
    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = out[0].payload
    onset = None
    with pyav_errors() as errors:
        for unit in frames:
            for frame in decoder.decode(av.Packet(unit.payload)):
                loud = [i for i, x in enumerate(array.array("f", bytes(frame.planes[0])[: frame.samples * 4]))
                        if abs(x) > 0.02]
                if loud and onset is None:
                    onset = unit.dts + loud[0] * TIME_BASE // 48000
    assert errors == []
    assert onset is not None and 0 <= onset - units[tone].dts < 90 * 10


def test_corrupt_and_empty_opus_packets_are_skipped_and_counted():
    units = opus_units()
    bridge = OpusToAac(None)
    bad = [replace(units[10], payload=b"\xff" * 40), replace(units[11], payload=b"")]  # invalid TOC; empty
    out = convert(bridge, [*units[:10], *bad, *units[12:]])
    assert bridge.errors == 1
    # the AAC of the 148 good packets' time, less the one frame the encoder holds (the config unit first)
    sent = (len(units) - 2) * OPUS_FRAME / 1024
    assert out[0].config and math.floor(sent) - 1 <= len(out) - 1 <= math.ceil(sent), (len(out) - 1, sent)
    probe_flv(out)
    assert bridge.feed(AccessUnit(AUDIO, "opus", 0, 0, opus_packets()[0], config=True)) == []
