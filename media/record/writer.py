"""Remux a stream's access units into a fragmented MP4 file with FFmpeg's MP4 muxer (PyAV): no
decode, no transcode.

Why fragmented: a recording may run for hours and the process may die at any moment. With
``empty_moov`` the file header is complete from the start and every fragment (``moof`` + ``mdat``)
is self-contained and flushed to disk as soon as it is cut (on each keyframe, and at least every
``flush_every`` seconds of media), so a crash of the process loses at most the last fragment: what
is on disk always plays. A Celery task later turns the finished file into a faststart MP4 for
download and seeking.

Synchronous and not thread-safe: one recorder per file, driven from one worker thread
(`media.record.from_hub`), so FFmpeg's file I/O never runs on the event loop.

Streams are created from the first configuration units: H.264 avcC / HEVC hvcC records as they
are (the payloads are already length-prefixed, as MP4 wants them), AAC with its
AudioSpecificConfig, Opus with its OpusHead (one is made when the source sends none). The file
starts at the first video keyframe, at time 0. A configuration resent unchanged is ignored; a new
one of the same codec and size travels in band before the keyframes that follow; one that changes
the codec, the picture size or the audio format ends the file (`ended == "config_changed"`): the
caller starts a new part.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from media.codecs import aac, avc, opus
from media.codecs.errors import CodecError, MalformedData
from media.hub.unit import AUDIO, TIME_BASE, VIDEO, AccessUnit

log = logging.getLogger(__name__)

TICK = Fraction(1, TIME_BASE)
VIDEO_CODECS = frozenset({"h264", "hevc"})
AUDIO_CODECS = frozenset({"aac", "opus"})
# Without an audio configuration after this many video frames, the recording is video-only.
_AUDIO_WAIT_FRAMES = 60
# Units buffered before the file can start (no video configuration yet): past it, give up.
_MAX_PENDING = 4096


class RecordUnsupported(Exception):
    """The stream cannot be recorded as it is (its video codec, or no usable configuration)."""


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    path: Path
    duration: float  # s of media in the file
    size: int  # bytes on disk
    video_codec: str
    audio_codec: str | None  # None: video only
    width: int
    height: int
    first_dts: int  # source clock (TIME_BASE ticks) of the file's time 0: its first keyframe
    last_dts: int  # source clock of the last unit written


@dataclass(frozen=True, slots=True)
class _Track:
    codec: str
    extradata: bytes
    width: int = 0
    height: int = 0
    rate: int = 0
    channels: int = 0

    @property
    def shape(self) -> tuple[Any, ...]:
        """What may not change within one file."""
        return self.codec, self.width, self.height, self.rate, self.channels


def _hevc_parameter_sets(record: bytes) -> list[bytes]:
    """The NAL units of an HEVCDecoderConfigurationRecord's arrays (VPS, SPS, PPS, SEI)."""
    if len(record) < 23:
        raise MalformedData("HEVCDecoderConfigurationRecord too short")
    nals, pos = [], 23
    for _ in range(record[22]):
        count, pos = int.from_bytes(record[pos + 1 : pos + 3], "big"), pos + 3
        for _ in range(count):
            end = pos + 2 + int.from_bytes(record[pos : pos + 2], "big")
            if end > len(record):
                raise MalformedData("truncated HEVCDecoderConfigurationRecord")
            nals.append(record[pos + 2 : end])
            pos = end
    return nals


def _video_track(unit: AccessUnit) -> tuple[_Track, list[bytes]]:
    """The track setup of a video configuration unit, and its parameter sets."""
    record = bytes(unit.payload)
    if unit.codec == "h264":
        config = avc.decoder_config_parse(record)
        if not config.sps:
            raise MalformedData("AVC decoder configuration without SPS")
        if config.length_size != 4:  # the payloads carry 4-byte lengths whatever the source said
            record = avc.decoder_config_build(config.sps, config.pps)
        info = avc.sps_parse(config.sps[0])
        return _Track("h264", record, info.width, info.height), [*config.sps, *config.pps]
    nals = _hevc_parameter_sets(record)
    record = record[:21] + bytes([record[21] | 0x03]) + record[22:]  # 4-byte NAL lengths
    decoder = av.CodecContext.create("hevc", "r")  # FFmpeg reads the size from the record's SPS
    decoder.extradata = record
    try:
        decoder.open()
    except av.FFmpegError as exc:
        raise MalformedData(f"unreadable HEVC configuration: {exc}") from exc
    if not decoder.width or not decoder.height:
        raise MalformedData("HEVC configuration without a picture size")
    return _Track("hevc", record, decoder.width, decoder.height), nals


def _audio_track(unit: AccessUnit) -> _Track:
    if unit.codec == "aac":
        config = aac.config_parse(unit.payload)
        return _Track("aac", bytes(unit.payload), rate=config.sample_rate, channels=config.channels or 2)
    channels, _ = opus.opus_head_parse(unit.payload)
    return _Track("opus", bytes(unit.payload), rate=48000, channels=channels)


def _new_stream(container: av.container.OutputContainer, track: _Track) -> av.stream.Stream:
    """A stream muxed from packets as they are, set up from the track (never an encoder).

    PyAV's ``add_stream`` would open an encoder at the header, which replaces the extradata with
    its own; a stream copied from a template is never opened. The template comes from a scratch
    container that is never written.
    """
    scratch = av.open(io.BytesIO(), "w", format="mp4")
    try:
        stream = container.add_stream_from_template(scratch.add_stream(track.codec), opaque=True)
    finally:
        scratch.close()
    ctx = stream.codec_context
    ctx.extradata = track.extradata
    if track.width:
        ctx.width, ctx.height = track.width, track.height
        if track.codec == "hevc":
            ctx.codec_tag = "hvc1"  # parameter sets in the sample entry, as Apple players want
    else:
        ctx.sample_rate = track.rate
        ctx.layout = f"{track.channels}c"  # "1c" is mono, "2c" stereo, "6c" 5.1...
    stream.time_base = TICK
    return stream


class Mp4Recorder:
    def __init__(self, path: Path, *, flush_every: float = 2.0) -> None:
        if flush_every <= 0:
            raise ValueError("flush_every must be > 0")
        self.path = path
        self.flush_every = flush_every
        self.ended: str | None = None  # set when the file ended on its own ("config_changed")
        self._video: _Track | None = None
        self._audio: _Track | None = None
        self._audio_skipped = False
        self._inband = b""  # parameter sets sent before each keyframe after a same-size config change
        self._pending: list[AccessUnit] = []
        self._frames_without_audio = 0
        self._container: av.container.OutputContainer | None = None
        self._streams: dict[str, av.stream.Stream] = {}
        self._base = 0  # source dts of the file's time 0
        self._last_dts: dict[str, int] = {}  # per kind, in file time
        self._end: dict[str, int] = {}  # per kind: end of the last unit (file time)
        self._last_source_dts = 0
        self.packets = 0
        self.skipped = 0

    @property
    def started(self) -> bool:
        return self._container is not None

    # ---------------------------------------------------------------- input

    def write(self, unit: AccessUnit) -> None:
        """Take one unit; raises RecordUnsupported when the stream cannot be recorded."""
        if self.ended is not None or unit.kind not in (VIDEO, AUDIO):
            return
        if unit.config:
            self._configure(unit)
        elif self._container is None:
            self._buffer_until_ready(unit)
        else:
            self._mux(unit)

    def _configure(self, unit: AccessUnit) -> None:
        if unit.kind == VIDEO and unit.codec not in VIDEO_CODECS:
            raise RecordUnsupported(f"video codec {unit.codec} (MP4 recording here takes H.264 or HEVC)")
        if unit.kind == AUDIO and unit.codec not in AUDIO_CODECS:
            self._skip_audio(unit.codec)
            return
        try:
            if unit.kind == VIDEO:
                track, parameter_sets = _video_track(unit)
            else:
                track, parameter_sets = _audio_track(unit), []
        except CodecError as exc:
            if self._container is None:
                raise RecordUnsupported(f"unreadable {unit.codec} configuration: {exc}") from exc
            log.warning("record %s: ignoring an unreadable %s configuration: %s", self.path.name, unit.codec, exc)
            return
        current = self._video if unit.kind == VIDEO else self._audio
        if self._container is None:
            if unit.kind == VIDEO:
                self._video = track
            else:
                self._audio = track
        elif current is None:
            log.info("record %s: %s arrived after the file started; left out", self.path.name, unit.codec)
        elif track.extradata == current.extradata:
            pass  # resent unchanged
        elif track.shape != current.shape:
            log.info("record %s: %s configuration changed (%s -> %s); the file ends here",
                     self.path.name, unit.kind, current.shape, track.shape)
            self.ended = "config_changed"
        elif unit.kind == VIDEO:
            self._inband = avc.nals_to_avcc(parameter_sets)
            log.info("record %s: new %s parameter sets of the same size, sent in band", self.path.name, unit.codec)
        # else: the same audio format, which the first configuration still describes

    def _skip_audio(self, codec: str) -> None:
        if not self._audio_skipped:
            self._audio_skipped = True
            log.info("record %s: audio codec %s left out (MP4 recording here takes AAC or Opus)", self.path.name, codec)

    def _buffer_until_ready(self, unit: AccessUnit) -> None:
        """Start once the video (and audio, unless it is clearly absent) setup is known, at a
        keyframe: units before the first keyframe cannot be decoded anyway."""
        if unit.kind == VIDEO:
            if unit.codec not in VIDEO_CODECS:
                raise RecordUnsupported(f"video codec {unit.codec} (MP4 recording here takes H.264 or HEVC)")
            if not self._pending and not unit.keyframe:
                self.skipped += 1
                return
            self._frames_without_audio += self._audio is None
        elif not self._pending or unit.codec not in AUDIO_CODECS:
            self.skipped += 1
            return
        elif unit.codec == "opus" and self._audio is None:
            self._audio = _Track("opus", opus.opus_head(2), rate=48000, channels=2)  # OpusHead is optional
        self._pending.append(unit)
        if self._video and (self._audio or self._audio_skipped or self._frames_without_audio > _AUDIO_WAIT_FRAMES):
            self._start()
        elif len(self._pending) > _MAX_PENDING:
            raise RecordUnsupported("no video configuration before the first keyframes")

    def _start(self) -> None:
        self._open()
        pending, self._pending = self._pending, []
        for queued in pending:
            self._mux(queued)

    # ---------------------------------------------------------------- muxing

    def _open(self) -> None:
        assert self._video is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        micros = str(int(self.flush_every * 1_000_000))
        options = {
            "movflags": "frag_keyframe+empty_moov+default_base_moof",
            "frag_duration": micros,  # a fragment at least this often, keyframe or not
            "flush_packets": "1",  # write each fragment out as soon as it is cut
            "max_interleave_delta": micros,  # a stalled track never holds the other one back longer
        }
        self._container = av.open(str(self.path), "w", format="mp4", options=options)
        self._streams[VIDEO] = _new_stream(self._container, self._video)
        if self._audio:
            self._streams[AUDIO] = _new_stream(self._container, self._audio)
        self._base = self._pending[0].dts
        log.info("record %s: %s %dx%d%s", self.path.name, self._video.codec, self._video.width, self._video.height,
                 f" + {self._audio.codec}" if self._audio else " (no audio)")

    def _mux(self, unit: AccessUnit) -> None:
        kind = unit.kind
        stream = self._streams.get(kind)
        track = self._video if kind == VIDEO else self._audio
        if stream is None or track is None or unit.codec != track.codec or not unit.payload:
            return
        dts, pts = unit.dts - self._base, unit.pts - self._base
        last = self._last_dts.get(kind)
        if dts < 0 or (last is not None and dts <= last and kind == AUDIO):
            self.skipped += 1  # audio before the first frame, or a repeated timestamp
            return
        if last is not None and dts <= last:
            dts = last + 1  # the muxer wants increasing dts; a video frame cannot be dropped
        pts = max(pts, dts)
        payload = unit.payload
        if kind == VIDEO and unit.keyframe and self._inband:
            payload = self._inband + payload
        packet = av.Packet(payload)
        packet.stream = stream
        packet.time_base = TICK
        packet.dts = dts
        packet.pts = pts
        packet.is_keyframe = unit.keyframe or kind == AUDIO
        self._container.mux(packet)
        step = dts - last if last is not None else 0
        self._last_dts[kind] = dts
        self._end[kind] = max(self._end.get(kind, 0), pts + step)
        self._last_source_dts = max(self._last_source_dts, unit.dts)
        self.packets += 1

    # ---------------------------------------------------------------- end

    def close(self) -> RecordingInfo | None:
        """Write the last fragment and the index; None when nothing was recorded."""
        if self._container is None and self._video and self._pending:
            self._start()  # a short stream that ended while its audio was awaited
        container, self._container = self._container, None
        if container is None:
            return None
        try:
            container.close()
        except Exception:
            log.exception("record %s: closing the file failed (its fragments are on disk)", self.path.name)
        assert self._video is not None
        return RecordingInfo(
            path=self.path,
            duration=max(self._end.values(), default=0) / TIME_BASE,
            size=self.path.stat().st_size if self.path.exists() else 0,
            video_codec=self._video.codec,
            audio_codec=self._audio.codec if AUDIO in self._streams and self._audio else None,
            width=self._video.width,
            height=self._video.height,
            first_dts=self._base,
            last_dts=self._last_source_dts,
        )
