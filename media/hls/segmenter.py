"""Remux a stream's H.264/AAC access units into MPEG-TS segments and a rolling playlist with
FFmpeg's own HLS muxer (PyAV): no demuxer, no transcode.

Synchronous and not thread-safe: one segmenter per stream, driven from one worker thread
(`media.hls.from_hub`), so FFmpeg's file I/O never runs on the event loop.

Layout under `root` (HLS_PATH), served as is by the media HTTP server or by nginx:
    {public_id}.m3u8          the playlist (written to a temp file, then renamed)
    {public_id}/seg{N}.ts     its segments, listed as "{public_id}/seg{N}.ts"
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from media.codecs import aac, avc
from media.codecs.errors import CodecError
from media.hub.unit import AUDIO, TIME_BASE, VIDEO, AccessUnit

log = logging.getLogger(__name__)

TICK = Fraction(1, TIME_BASE)
CODECS = frozenset({"h264", "aac"})  # what the MPEG-TS segments carry here (the rest needs transcoding)
# Without an audio sequence header after this many video frames, the stream is video-only.
_AUDIO_WAIT_FRAMES = 60


class HlsUnsupported(Exception):
    """The stream carries a codec HLS (MPEG-TS) output here cannot take without transcoding."""


@dataclass(frozen=True, slots=True)
class HlsOptions:
    fragment: float = 2.0  # target segment length (s); cut on the first keyframe at or after it
    playlist_length: float = 60.0  # seconds of media the playlist lists


@dataclass(frozen=True, slots=True)
class _Video:
    extradata: bytes  # SPS/PPS in Annex B, put before every keyframe
    nal_length_size: int
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class _Audio:
    extradata: bytes  # AudioSpecificConfig
    rate: int
    channels: int


def _video_config(record: bytes) -> _Video:
    config = avc.decoder_config_parse(record)
    if not config.sps:
        raise HlsUnsupported("AVC decoder configuration without SPS")
    info = avc.sps_parse(config.sps[0])
    annexb = avc.nals_to_annexb((*config.sps, *config.pps))
    return _Video(annexb, config.length_size, info.width, info.height)


def _audio_config(config: bytes) -> _Audio:
    parsed = aac.config_parse(config)
    if not 1 <= parsed.channels <= 2:
        raise HlsUnsupported(f"AAC config with {parsed.channels} channels")
    return _Audio(config, parsed.sample_rate, parsed.channels)


class HlsSegmenter:
    def __init__(self, root: Path, public_id: str, options: HlsOptions, *, resume: bool = False) -> None:
        self.root = root
        self.public_id = public_id
        self.options = options
        self.playlist = root / f"{public_id}.m3u8"
        self.segment_dir = root / public_id
        self.resume = resume and self.playlist.exists()  # a publisher reconnecting: append, mark discontinuity
        self._video: _Video | None = None
        self._audio: _Audio | None = None
        self._pending: list[AccessUnit] = []
        self._container = None
        self._streams: dict[int, av.stream.Stream] = {}
        self._last_dts: dict[int, int] = {}
        self._frames_without_audio = 0
        self._audio_skipped = False
        self.packets = 0
        self.skipped = 0
        self.segments = 0  # segments finished, by FFmpeg's own rule (below)
        self._start_pts: int | None = None

    # ---------------------------------------------------------------- input

    def write(self, unit: AccessUnit) -> None:
        if unit.config:
            self._configure(unit)
            return
        if unit.kind not in (VIDEO, AUDIO):
            return
        if self._container is None:
            self._buffer_until_ready(unit)
            return
        self._mux(unit)

    def _configure(self, unit: AccessUnit) -> None:
        try:
            self._configure_checked(unit)
        except CodecError as exc:
            raise HlsUnsupported(f"unreadable codec configuration: {exc}") from exc

    def _configure_checked(self, unit: AccessUnit) -> None:
        if unit.kind == VIDEO:
            if unit.codec != "h264":
                raise HlsUnsupported(f"video codec {unit.codec} (HLS here takes H.264)")
            config = _video_config(unit.payload)
            if self._video and self._container and config != self._video:
                log.info("hls %s: video configuration changed mid-stream", self.public_id)
            self._video = config
        elif unit.codec == "aac":
            self._audio = _audio_config(unit.payload)
        else:
            self._skip_audio(unit.codec)

    def _skip_audio(self, codec: str) -> None:
        """HLS here muxes AAC only: other audio is left out (the video still plays)."""
        if not self._audio_skipped:
            self._audio_skipped = True
            log.info("hls %s: audio codec %s left out (HLS here takes AAC)", self.public_id, codec)

    def _buffer_until_ready(self, unit: AccessUnit) -> None:
        """Open the muxer once both sequence headers are known (or audio is clearly absent),
        starting at a keyframe; units before the first keyframe cannot be decoded anyway."""
        if unit.kind == VIDEO:
            if unit.codec != "h264":
                raise HlsUnsupported(f"video codec {unit.codec} (HLS here takes H.264)")
            if not self._pending and not unit.keyframe:
                self.skipped += 1
                return
            self._frames_without_audio += self._audio is None
        elif not self._pending:
            self.skipped += 1
            return
        self._pending.append(unit)
        if self._video and (self._audio or self._audio_skipped or self._frames_without_audio > _AUDIO_WAIT_FRAMES):
            self._open()
            pending, self._pending = self._pending, []
            for queued in pending:
                self._mux(queued)

    # ---------------------------------------------------------------- muxing

    def _open(self) -> None:
        self.segment_dir.mkdir(parents=True, exist_ok=True)
        flags = ["delete_segments", "temp_file", "independent_segments"]
        if self.resume:
            flags += ["append_list", "discont_start"]
        options = {
            "hls_time": f"{self.options.fragment:g}",
            "hls_list_size": str(max(1, math.ceil(self.options.playlist_length / self.options.fragment))),
            "hls_flags": "+".join(flags),
            # A new session numbers from the epoch second, so it never reuses a segment name a
            # CDN or player may still cache; a resumed one continues the playlist's own numbers
            # (append_list), so numbers and #EXT-X-MEDIA-SEQUENCE stay one sequence.
            "hls_start_number_source": "generic" if self.resume else "epoch",
            "hls_segment_filename": str(self.segment_dir / "seg%d.ts"),
            "hls_base_url": f"{self.public_id}/",
            "hls_delete_threshold": "1",
        }
        self._container = av.open(str(self.playlist), "w", format="hls", options=options)
        video = self._container.add_stream("h264")
        video.codec_context.width, video.codec_context.height = self._video.width, self._video.height
        video.codec_context.extradata = self._video.extradata
        video.time_base = TICK
        self._streams[VIDEO] = video
        if self._audio:
            audio = self._container.add_stream("aac", rate=self._audio.rate)
            audio.codec_context.layout = "stereo" if self._audio.channels == 2 else "mono"
            audio.codec_context.extradata = self._audio.extradata
            audio.time_base = TICK
            self._streams[AUDIO] = audio
        log.info("hls %s: %dx%d%s, segments of %gs", self.public_id, self._video.width, self._video.height,
                 " + AAC" if self._audio else " (no audio)", self.options.fragment)

    def _mux(self, unit: AccessUnit) -> None:
        stream = self._streams.get(unit.kind)
        if stream is None or (unit.kind == AUDIO and unit.codec != "aac"):
            return
        try:
            data = self._payload(unit)
        except CodecError as exc:
            self.skipped += 1
            log.debug("hls %s: skipping a bad unit: %s", self.public_id, exc)
            return
        if data is None:
            return
        # The muxer refuses a dts that does not increase (e.g. an end-of-sequence tag).
        last = self._last_dts.get(unit.kind)
        if last is not None and unit.dts <= last:
            self.skipped += 1
            return
        self._last_dts[unit.kind] = unit.dts
        packet = av.Packet(data)
        packet.stream = stream
        packet.time_base = TICK
        packet.dts = unit.dts
        packet.pts = unit.pts
        packet.is_keyframe = unit.keyframe or unit.kind == AUDIO
        if unit.kind == VIDEO:
            self._count_cut(unit)
        self._container.mux(packet)
        self.packets += 1

    def _count_cut(self, unit: AccessUnit) -> None:
        """FFmpeg's hls muxer cuts at the first video keyframe at or past `fragment` x (segments
        so far + 1) from the first packet: a segment is finished there."""
        if self._start_pts is None:
            self._start_pts = unit.pts
        elif unit.keyframe and unit.pts - self._start_pts >= self.options.fragment * TIME_BASE * (self.segments + 1):
            self.segments += 1

    def _payload(self, unit: AccessUnit) -> bytes | None:
        if unit.kind == AUDIO:
            return unit.payload or None
        body = avc.avcc_to_annexb(unit.payload)
        # RTMP never repeats SPS/PPS in band; TS segments must start decodable on their own.
        if unit.keyframe:
            body = self._video.extradata + body
        return body or None

    # ---------------------------------------------------------------- end

    def close(self) -> None:
        """Finish the last segment and append #EXT-X-ENDLIST."""
        if self._container is not None:
            self._container.close()
            self._container = None
            self.segments += 1  # the last one, shorter

    @property
    def started(self) -> bool:
        return self._container is not None
