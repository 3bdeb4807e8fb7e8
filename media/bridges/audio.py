"""AAC -> Opus, sans-I/O: AAC access units in, Opus access units out, on the hub's clock.

PyAV (FFmpeg): the AAC decoder configured with the stream's AudioSpecificConfig, a resampler to
48 kHz stereo in 960-sample (20 ms) frames, and `libopus` (FFmpeg's native Opus encoder is known to
corrupt audio, SRS #3140). Input pts go through the decoder and resampler, so the Opus frames keep
the source's timeline (lip sync with the untouched video). Synchronous: run it in a worker thread.
"""
from __future__ import annotations

import logging
from fractions import Fraction

import av

from media.hub.unit import AUDIO, TIME_BASE, AccessUnit

log = logging.getLogger(__name__)

OPUS_RATE = 48_000
OPUS_FRAME = 960  # samples: 20 ms
HUB_TICK = Fraction(1, TIME_BASE)
OPUS_TICK = Fraction(1, OPUS_RATE)


class AacToOpus:
    def __init__(self, audio_specific_config: bytes, *, bitrate: int = 96_000) -> None:
        self._decoder = av.CodecContext.create("aac", "r")
        self._decoder.extradata = audio_specific_config
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=OPUS_RATE, frame_size=OPUS_FRAME)
        encoder = av.CodecContext.create("libopus", "w")
        encoder.sample_rate = OPUS_RATE
        encoder.layout = "stereo"
        encoder.format = "s16"
        encoder.bit_rate = bitrate
        encoder.time_base = OPUS_TICK
        self._encoder = encoder
        self._next: int | None = None  # 48 kHz pts of the next Opus frame
        self.units_in = 0
        self.units_out = 0
        self.errors = 0

    def feed(self, unit: AccessUnit) -> list[AccessUnit]:
        """Opus units for one AAC unit (none while the resampler fills a 20 ms frame)."""
        self.units_in += 1
        packet = av.Packet(unit.payload)
        packet.pts, packet.dts, packet.time_base = unit.pts, unit.dts, HUB_TICK
        out: list[AccessUnit] = []
        try:
            for frame in self._decoder.decode(packet):
                for resampled in self._resampler.resample(frame):
                    out += self._encode(resampled)
        except av.FFmpegError as exc:  # a corrupt AAC frame: skip it, the next ones decode
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.info("aac->opus: frame skipped (%d so far): %s", self.errors, exc)
        return out

    def _encode(self, frame: av.AudioFrame) -> list[AccessUnit]:
        out = []
        for packet in self._encoder.encode(frame):
            if packet.pts is None:
                continue
            # Count samples: each frame follows the last exactly (the source's pts, rescaled from
            # 44.1 kHz, wobble by a few samples, which a receiver hears as gaps and overlaps).
            # Re-anchor on the source only after a real jump (a gap in the stream, > 100 ms).
            if self._next is None or abs(packet.pts - self._next) > OPUS_RATE // 10:
                self._next = packet.pts - packet.pts % 8  # a multiple of 8: exact at 90 kHz (x15/8)
            pts, self._next = self._next, self._next + (packet.duration or OPUS_FRAME)
            dts = pts * TIME_BASE // OPUS_RATE
            out.append(AccessUnit(AUDIO, "opus", dts, dts, bytes(packet), keyframe=True))
        self.units_out += len(out)
        return out
