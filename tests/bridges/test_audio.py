"""AAC -> Opus on real encoder output (ffmpeg's AAC), decoded back with libopus."""
from __future__ import annotations

import array

import av
import pytest

from media.bridges.audio import AacToOpus
from tests.support.flv_source import access_units, ffmpeg_flv


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
    seconds = (len(units) - 1) * 1024 / 44100
    assert len(out) >= 0.95 * seconds * 50
    decoder = av.CodecContext.create("libopus", "r")
    peaks = []
    for unit in out[5:]:
        for frame in decoder.decode(av.Packet(unit.payload)):
            samples = array.array("h", bytes(frame.planes[0])[: frame.samples * 4])
            peaks.append(max(abs(x) for x in samples))
            assert (frame.sample_rate, frame.layout.name) == (48000, "stereo")
    assert min(peaks) > 1500 and sorted(peaks)[len(peaks) // 2] > 2500, "the 440 Hz tone (amplitude 1/8) comes through"


def test_a_corrupt_aac_frame_is_skipped_and_counted():
    units = aac_units(1)
    bridge = AacToOpus(units[0].payload)
    from dataclasses import replace

    bad = replace(units[5], payload=b"\xff" * 40)
    for unit in [*units[1:5], bad, *units[6:]]:
        bridge.feed(unit)
    assert bridge.units_out > 20
