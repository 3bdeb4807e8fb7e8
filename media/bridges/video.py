"""Any decodable video -> H.264 without B-frames, sans-I/O: hub units in, hub units out, once per stream.

Why: browsers' WebRTC stacks play no B-frames (they decode in arrival order), and FLV/HLS players
want H.264, while publishers send H.264 with B-frames, HEVC, VP8, VP9 or AV1. PyAV (FFmpeg) decodes
the source (h264, hevc, vp8, vp9 decoders, libdav1d for AV1) and libx264 re-encodes it with
`tune=zerolatency` (no B-frames, no lookahead: one packet out per frame in). Each frame keeps the
source's presentation time, so the video stays in sync with the untouched audio. IDRs come at a
fixed presentation-time interval (HLS cuts segments on them) and on demand (a new WebRTC viewer).
Synchronous: run it in a worker thread.
"""
from __future__ import annotations

import logging
from fractions import Fraction

import av
from av.video.frame import PictureType

from media.codecs import avc
from media.hub.unit import TIME_BASE, VIDEO, AccessUnit

log = logging.getLogger(__name__)

HUB_TICK = Fraction(1, TIME_BASE)
DECODERS = {"h264": "h264", "hevc": "hevc", "vp8": "vp8", "vp9": "vp9", "av1": "libdav1d"}
_NAL_LENGTH_PREFIXED = frozenset({"h264", "hevc"})
BITS_PER_PIXEL = 0.1  # per frame, at a nominal 30 fps: 1280x720 -> ~2.8 Mbit/s
NOMINAL_FPS = 30  # x264's rate control and VUI need a rate; real timing comes from the pts
_NO_GOP = 1 << 30  # x264's "infinite" keyint: IDRs only where this bridge asks for them


class VideoToH264:
    def __init__(self, codec: str, config: bytes | None, *, keyframe_interval: float = 2.0,
                 profile: str = "high", bitrate: int | None = None, live_from: int | None = None) -> None:
        if codec not in DECODERS:
            raise ValueError(f"no decoder for {codec!r}")
        self.codec = codec
        self._config: bytes | None = None
        self._decoder = self._open_decoder(config)
        self._interval = round(keyframe_interval * TIME_BASE)
        self._profile = profile
        self._bitrate = bitrate
        self._live_from = live_from
        self._encoder: av.VideoCodecContext | None = None
        self._size: tuple[int, int] | None = None  # encoded width, height
        self._force = False
        self._last_idr: int | None = None  # pts of the last IDR asked for
        self._last_pts: int | None = None  # pts of the last frame encoded
        self._params: tuple[list[bytes], list[bytes]] | None = None  # SPS/PPS of the last config unit
        self.units_in = 0
        self.units_out = 0
        self.errors = 0

    @property
    def width(self) -> int | None:
        return self._size[0] if self._size else None

    @property
    def height(self) -> int | None:
        return self._size[1] if self._size else None

    def force_keyframe(self) -> None:
        """Make the next encoded frame an IDR. Only sets a flag: safe from another thread."""
        self._force = True

    def feed(self, unit: AccessUnit) -> list[AccessUnit]:
        """H.264 units for one input unit: a config unit before each new SPS/PPS, then the frames."""
        self.units_in += 1
        if unit.config:
            if unit.payload != self._config:  # publishers resend identical sequence headers
                self._decoder = self._open_decoder(unit.payload)
            return []
        if not unit.payload:
            return []  # an empty packet would put the decoder in draining mode for good
        out: list[AccessUnit] = []
        try:
            for frame in self._decoder.decode(self._packet(unit)):
                out += self._encode(frame)
        except av.FFmpegError as exc:  # a corrupt or missing reference: the next keyframe recovers
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.info("%s->h264: unit skipped (%d so far): %s", self.codec, self.errors, exc)
        self.units_out += len(out)
        return out

    def _open_decoder(self, config: bytes | None) -> av.VideoCodecContext:
        decoder = av.CodecContext.create(DECODERS[self.codec], "r")
        if config:
            decoder.extradata = config
        # Slice threads only: frame threads would hold back one frame per thread (latency).
        decoder.thread_type = "SLICE"
        if self.codec == "av1":
            decoder.options = {"max_frame_delay": "1"}  # dav1d otherwise buffers frames per thread
        self._config = config or None
        return decoder

    def _packet(self, unit: AccessUnit) -> av.Packet:
        payload = unit.payload
        if self.codec in _NAL_LENGTH_PREFIXED and self._config is None:
            # Without a configuration record FFmpeg reads Annex B (parameter sets in-band).
            payload = avc.avcc_to_annexb(payload)
        packet = av.Packet(payload)
        packet.pts, packet.dts, packet.time_base = unit.pts, unit.dts, HUB_TICK
        return packet

    def _encode(self, frame: av.VideoFrame) -> list[AccessUnit]:
        pts = frame.pts
        if pts is None or (self._live_from is not None and pts < self._live_from):
            return []  # decoded only as a reference for the frames after it
        if self._last_pts is not None and pts <= self._last_pts:
            if self._last_pts - pts < TIME_BASE:
                return []  # a repeated timestamp: the output's must strictly increase
            self._encoder = None  # the source's clock went back: a new timeline from a new IDR
        encoder = self._encoder_for(frame)
        if (frame.width, frame.height, frame.format.name) != (encoder.width, encoder.height, "yuv420p"):
            frame = frame.reformat(width=encoder.width, height=encoder.height, format="yuv420p")
        frame.pict_type = PictureType.I if self._wants_idr(pts) else PictureType.NONE
        self._last_pts = pts
        return [out for packet in encoder.encode(frame) for out in self._units(packet)]

    def _wants_idr(self, pts: int) -> bool:
        forced, self._force = self._force, False
        if forced or self._last_idr is None or pts - self._last_idr >= self._interval:
            self._last_idr = pts
            return True
        return False

    def _encoder_for(self, frame: av.VideoFrame) -> av.VideoCodecContext:
        size = (max(2, frame.width & ~1), max(2, frame.height & ~1))  # 4:2:0 needs even sizes
        if self._encoder is None or size != self._size:
            self._encoder = self._open_encoder(*size)
            self._size = size
            self._last_idr = None  # a new encoder starts with an IDR
        return self._encoder

    def _open_encoder(self, width: int, height: int) -> av.VideoCodecContext:
        bitrate = self._bitrate or round(BITS_PER_PIXEL * width * height * NOMINAL_FPS)
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
        encoder.time_base = HUB_TICK
        encoder.framerate = Fraction(NOMINAL_FPS)
        encoder.bit_rate = bitrate
        encoder.gop_size = _NO_GOP
        # No global header: x264 then repeats SPS/PPS in every IDR, where they are read from.
        encoder.options = {
            "preset": "veryfast", "tune": "zerolatency", "profile": self._profile,
            "forced-idr": "1",  # a frame sent as type I becomes an IDR, not an open-GOP I frame
            "sc_threshold": "0",  # no scene-cut keyframes: IDRs only on our interval and on demand
            "maxrate": str(bitrate), "bufsize": str(bitrate),  # a 1 s VBV bounds the live rate
        }
        encoder.open()
        return encoder

    def _units(self, packet: av.Packet) -> list[AccessUnit]:
        # SPS/PPS stay in the IDR's payload too: HLS segments and RTP packetizers that start at a
        # keyframe then carry them in-band, as decoders joining mid-stream need.
        nals = avc.split_annexb(bytes(packet))
        pts = packet.pts
        out = []
        if packet.is_keyframe:
            sps, pps = avc.parameter_sets(nals)
            if sps and pps and (sps, pps) != self._params:
                self._params = (sps, pps)
                out.append(AccessUnit(VIDEO, "h264", pts, pts, avc.decoder_config_build(sps, pps), config=True))
        out.append(AccessUnit(VIDEO, "h264", pts, pts, avc.nals_to_avcc(nals), keyframe=packet.is_keyframe))
        return out
