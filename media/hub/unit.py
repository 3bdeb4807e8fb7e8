"""The hub's only currency: one encoded access unit of one codec, whatever protocol carried it.

Sources (RTMP, WebRTC) turn what they receive into units at their edge; readers (RTMP, HTTP-FLV,
HLS, WebRTC) turn units into what they send at theirs. No protocol's framing lives here.

Time base: ``TIME_BASE`` (90 kHz, the RTP video and MPEG-TS clock) for ``dts`` and ``pts``. It
holds RTMP's milliseconds (x90), RTP video ticks and 20 ms Opus frames (1800) exactly.

One canonical payload per codec:

=============  ==========================================  =====================================
codec          media unit payload                          config unit payload
=============  ==========================================  =====================================
``h264``       NAL units, each after a 4-byte big-endian   AVCDecoderConfigurationRecord (SPS/PPS)
               length (AVCC, as MP4 and FLV carry them)
``hevc``       the same, HEVC NAL units                    HEVCDecoderConfigurationRecord
``av1``        OBUs, low-overhead format (as MP4/FLV)      AV1CodecConfigurationRecord
``vp8/vp9``    the raw frame                               (none)
``aac``        one raw AAC frame (no ADTS header)          AudioSpecificConfig
``opus``       one Opus packet                             OpusHead (optional)
``flv/NAME``   an FLV tag body of a codec only FLV/RTMP    the FLV sequence header body
               carries here (MP3, Speex, G.711, Enhanced
               RTMP Opus, Sorenson H.263, VP6...)
``amf0``       (``DATA`` kind) an AMF0 script-data body: ``onMetaData`` with ``config`` set,
               cue points and captions without
=============  ==========================================  =====================================
"""

from __future__ import annotations

from dataclasses import dataclass

VIDEO = "video"
AUDIO = "audio"
DATA = "data"

TIME_BASE = 90_000  # ticks per second of dts and pts
TICKS_PER_MS = TIME_BASE // 1000


@dataclass(frozen=True, slots=True)
class AccessUnit:
    kind: str  # VIDEO, AUDIO or DATA
    codec: str  # "h264", "hevc", "av1", "vp8", "vp9", "aac", "opus", "flv/NAME", "amf0"
    dts: int  # decode time in TIME_BASE ticks
    pts: int  # presentation time in TIME_BASE ticks (== dts unless the video has B-frames)
    payload: bytes  # the canonical form above
    keyframe: bool = False  # video: a random access point; audio frames are all random access
    config: bool = False  # the payload is the codec configuration, not media

    @property
    def ms(self) -> int:
        """dts in milliseconds (RTMP/FLV's time base)."""
        return self.dts // TICKS_PER_MS
