"""AAC -> Opus on real encoder output (ffmpeg's AAC), decoded back with libopus."""
from __future__ import annotations

import array
import math

import av
import pytest

from media.bridges.audio import AacToOpus
from tests.support.flv_source import access_units, ffmpeg_flv
from tests.support.media import pyav_errors


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: no Django here."""


def aac_units(seconds: int = 3):
    return [u for u in access_units(ffmpeg_flv(seconds=seconds)) if u.kind == "audio"]


def test_aac_becomes_continuous_20_ms_opus_frames_on_the_source_clock():
    units = aac_units()
    bridge = AacToOpus(units[0].payload)
    out = [o for u in units[1:] for o in bridge.feed(u)]
    assert {(o.kind, o.codec, o.keyframe) for o in out} == {("audio", "opus", True)}
    steps = {b.dts - a.dts for a, b in zip(out, out[1:], strict=False)}
    assert steps == {1800}, steps  # exactly 20 ms apart at 90 kHz: a receiver hears no gap or overlap
    assert abs(out[0].dts - units[1].dts) < 90 * 50  # anchored on the source's clock (within 50 ms)
    # every 20 ms of the AAC's time (1024 samples a frame at 44.1 kHz), less at most the one the
    # resampler and encoder still hold (measured: 152 of 152.09 for 3 s)
    seconds = (len(units) - 1) * 1024 / 44100
    assert math.floor(seconds * 50) - 1 <= len(out) <= math.ceil(seconds * 50), (len(out), seconds * 50)
    decoder = av.CodecContext.create("libopus", "r")
    peaks = []
    with pyav_errors() as errors:
        for unit in out[5:]:
            for frame in decoder.decode(av.Packet(unit.payload)):
                samples = array.array("h", bytes(frame.planes[0])[: frame.samples * 4])
                peaks.append(max(abs(x) for x in samples))
                assert (frame.sample_rate, frame.layout.name) == (48000, "stereo")
    assert errors == [] and len(peaks) == len(out) - 5, (errors, len(peaks))
    assert min(peaks) > 1500 and sorted(peaks)[len(peaks) // 2] > 2500, "the 440 Hz tone (amplitude 1/8) comes through"


def test_a_corrupt_aac_frame_is_skipped_and_counted():
    units = aac_units(1)
    bridge = AacToOpus(units[0].payload)
    from dataclasses import replace

    bad = replace(units[5], payload=b"\xff" * 40)
    for unit in [*units[1:5], bad, *units[6:]]:
        bridge.feed(unit)
    # the Opus of every good frame's time (1024 samples at 44.1 kHz), less at most one still held
    good = (len(units) - 2) * 1024 / 44100 * 50
    assert bridge.errors == 1 and math.floor(good) - 1 <= bridge.units_out <= math.ceil(good), (bridge.units_out, good)
