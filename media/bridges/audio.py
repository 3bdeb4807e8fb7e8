"""AAC <-> Opus, sans-I/O: access units of one codec in, of the other out, on the hub's clock.

AAC -> Opus (`AacToOpus`) for WebRTC viewers of an RTMP publisher; Opus -> AAC (`OpusToAac`) for FLV
and HLS players of a WebRTC publisher.

PyAV (FFmpeg). AacToOpus: the AAC decoder configured with the stream's AudioSpecificConfig, a resampler to
48 kHz stereo in 960-sample (20 ms) frames, and `libopus` (FFmpeg's native Opus encoder is known to
corrupt audio, SRS #3140). Input pts go through the decoder and resampler, so the Opus frames keep
the source's timeline (lip sync with the untouched video). Synchronous: run it in a worker thread.
"""
from __future__ import annotations

import logging
from fractions import Fraction

import av
from av.codec.context import Flags

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
        if not unit.payload:
            return []  # an empty packet would flush (end) the decoder
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


AAC_FRAME = 1024  # samples per AAC-LC frame: exactly 1920 ticks at 48 kHz


class OpusToAac:
    """Opus -> AAC-LC (48 kHz stereo), for FLV and HLS players, which play no Opus.

    `libopus` decodes, a resampler makes 1024-sample planar float frames and FFmpeg's native `aac`
    encoder encodes them; its AudioSpecificConfig goes out first, as a config unit (the FLV AAC
    sequence header). Timestamps as in `AacToOpus`: counted in samples, anchored on the source.
    """

    def __init__(self, opus_head: bytes | None, *, bitrate: int = 128_000) -> None:
        # Without an OpusHead FFmpeg's libopus decodes stereo at 48 kHz, which any RTP Opus allows.
        self._decoder = av.CodecContext.create("libopus", "r")
        if opus_head:
            self._decoder.extradata = opus_head
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=OPUS_RATE, frame_size=AAC_FRAME)
        encoder = av.CodecContext.create("aac", "w")
        encoder.sample_rate = OPUS_RATE
        encoder.layout = "stereo"
        encoder.format = "fltp"
        encoder.bit_rate = bitrate
        encoder.time_base = OPUS_TICK
        encoder.flags |= Flags.global_header  # extradata = the AudioSpecificConfig
        encoder.open()
        self._encoder = encoder
        self.audio_specific_config = bytes(encoder.extradata)
        self._config_sent = False
        self._next: int | None = None  # 48 kHz pts of the next AAC frame
        self.units_in = 0
        self.units_out = 0
        self.errors = 0

    def feed(self, unit: AccessUnit) -> list[AccessUnit]:
        """AAC units for one Opus unit (none while the resampler fills a 1024-sample frame)."""
        self.units_in += 1
        if unit.config or not unit.payload:  # a later OpusHead: family 0 decodes the same without it
            return []  # (and an empty packet would put the decoder in draining mode for good)
        packet = av.Packet(unit.payload)
        packet.pts, packet.dts, packet.time_base = unit.pts, unit.dts, HUB_TICK
        out: list[AccessUnit] = []
        try:
            for frame in self._decoder.decode(packet):
                for resampled in self._resampler.resample(frame):
                    out += self._encode(resampled)
        except av.FFmpegError as exc:  # a corrupt Opus packet: skip it, the next ones decode
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.info("opus->aac: frame skipped (%d so far): %s", self.errors, exc)
        self.units_out += len(out)
        return out

    def _encode(self, frame: av.AudioFrame) -> list[AccessUnit]:
        out = []
        for packet in self._encoder.encode(frame):
            if packet.pts is None:
                continue
            # The encoder's packet pts already start one frame early (its 1024-sample priming),
            # which is where the decoded audio lines up with the source; a stream starting at 0
            # is anchored at 0 instead (no negative dts; 21 ms late for the priming only).
            if self._next is None or abs(packet.pts - self._next) > OPUS_RATE // 10:
                self._next = max(0, packet.pts - packet.pts % 8)  # a multiple of 8: exact at 90 kHz
            pts, self._next = self._next, self._next + (packet.duration or AAC_FRAME)
            dts = pts * TIME_BASE // OPUS_RATE
            if not self._config_sent:
                self._config_sent = True
                out.append(AccessUnit(AUDIO, "aac", dts, dts, self.audio_specific_config, config=True))
            out.append(AccessUnit(AUDIO, "aac", dts, dts, bytes(packet), keyframe=True))
        return out
