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


AAC_FRAME = 1024  # samples per AAC-LC frame: exactly 1920 ticks at 48 kHz


def _encoder(name: str, sample_format: str, bitrate: int) -> av.AudioCodecContext:
    encoder = av.CodecContext.create(name, "w")
    encoder.sample_rate = OPUS_RATE
    encoder.layout = "stereo"
    encoder.format = sample_format
    encoder.bit_rate = bitrate
    encoder.time_base = OPUS_TICK
    return encoder


class _AudioConverter:
    """Decode, resample to 48 kHz stereo frames of the target's size, encode; timestamps counted
    in samples: each frame follows the last exactly (the source's pts, rescaled from 44.1 kHz,
    wobble by a few samples, which a receiver hears as gaps and overlaps), re-anchored on the
    source only after a real jump (a gap in the stream, > 100 ms)."""

    name = ""
    codec = ""  # of the output

    def __init__(self, decoder: av.AudioCodecContext, encoder: av.AudioCodecContext, frame: int) -> None:
        self._decoder = decoder
        self._resampler = av.AudioResampler(format=encoder.format.name, layout="stereo", rate=OPUS_RATE,
                                            frame_size=frame)
        self._encoder = encoder
        self._frame = frame
        self._next: int | None = None  # 48 kHz pts of the next output frame
        self.units_in = 0
        self.units_out = 0
        self.errors = 0

    def feed(self, unit: AccessUnit) -> list[AccessUnit]:
        """Output units for one input unit (none while the resampler fills a frame)."""
        self.units_in += 1
        if unit.config or not unit.payload:  # configuration comes at construction; an empty
            return []  # packet would put the decoder in draining mode for good
        packet = av.Packet(unit.payload)
        packet.pts, packet.dts, packet.time_base = unit.pts, unit.dts, HUB_TICK
        out: list[AccessUnit] = []
        try:
            for frame in self._decoder.decode(packet):
                for resampled in self._resampler.resample(frame):
                    for encoded in self._encoder.encode(resampled):
                        if encoded.pts is not None:
                            out += self._units(self._stamp(encoded), bytes(encoded))
        except av.FFmpegError as exc:  # a corrupt frame: skip it, the next ones decode
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.info("%s: frame skipped (%d so far): %s", self.name, self.errors, exc)
        self.units_out += len(out)
        return out

    def _stamp(self, packet: av.Packet) -> int:
        """The packet's dts on the hub's clock, counted in samples."""
        if self._next is None or abs(packet.pts - self._next) > OPUS_RATE // 10:
            self._next = max(0, packet.pts - packet.pts % 8)  # a multiple of 8: exact at 90 kHz (x15/8)
        pts, self._next = self._next, self._next + (packet.duration or self._frame)
        return pts * TIME_BASE // OPUS_RATE

    def _units(self, dts: int, payload: bytes) -> list[AccessUnit]:
        return [AccessUnit(AUDIO, self.codec, dts, dts, payload, keyframe=True)]


class AacToOpus(_AudioConverter):
    name, codec = "aac->opus", "opus"

    def __init__(self, audio_specific_config: bytes, *, bitrate: int = 96_000) -> None:
        decoder = av.CodecContext.create("aac", "r")
        decoder.extradata = audio_specific_config
        super().__init__(decoder, _encoder("libopus", "s16", bitrate), OPUS_FRAME)


class OpusToAac(_AudioConverter):
    """Opus -> AAC-LC (48 kHz stereo), for FLV and HLS players, which play no Opus.

    `libopus` decodes, a resampler makes 1024-sample planar float frames and FFmpeg's native `aac`
    encoder encodes them; its AudioSpecificConfig goes out first, as a config unit (the FLV AAC
    sequence header). The encoder's packet pts already start one frame early (its 1024-sample
    priming), which is where the decoded audio lines up with the source; a stream starting at 0 is
    anchored at 0 instead (no negative dts; 21 ms late for the priming only).
    """

    name, codec = "opus->aac", "aac"

    def __init__(self, opus_head: bytes | None, *, bitrate: int = 128_000) -> None:
        # Without an OpusHead FFmpeg's libopus decodes stereo at 48 kHz, which any RTP Opus allows.
        decoder = av.CodecContext.create("libopus", "r")
        if opus_head:
            decoder.extradata = opus_head
        encoder = _encoder("aac", "fltp", bitrate)
        encoder.flags |= Flags.global_header  # extradata = the AudioSpecificConfig
        encoder.open()
        self.audio_specific_config = bytes(encoder.extradata)
        self._config_sent = False
        super().__init__(decoder, encoder, AAC_FRAME)

    def _units(self, dts: int, payload: bytes) -> list[AccessUnit]:
        out = super()._units(dts, payload)
        if not self._config_sent:
            self._config_sent = True
            out.insert(0, AccessUnit(AUDIO, "aac", dts, dts, self.audio_specific_config, config=True))
        return out
