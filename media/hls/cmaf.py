"""CMAF (fragmented MP4) writer for LL-HLS, sans-I/O: hub units in, init section and part bytes out.

``CmafWriter(configs)`` builds ``init`` (ftyp+moov, one track per kind: H.264 ``avc1``/``avcC`` or
HEVC ``hvc1``/``hvcC`` at 90 kHz; AAC ``mp4a``/``esds`` or Opus ``Opus``/``dOps`` at the sample
rate). ``push(unit)`` buffers media units; ``flush()`` returns one part (a CMAF chunk:
``moof``+``mdat``) of what was pushed, so ``init`` + the parts in order is a valid fragmented
MP4, and a segment (``seg{msn}.m4s``) is its parts concatenated.

Exact durations: a sample lasts until the next sample of its track (next dts - its dts), so each
track holds back its newest sample until its successor arrives: ``flush()`` writes every sample
whose duration is known. To cut before a unit (a keyframe starting a segment, or the first unit
past ~200 ms), push it, then flush: the part ends exactly at that unit's dts on the video track,
and the next part starts with it. Estimating the last duration instead would make a part's
duration, and the next part's tfdt, disagree with the media after any jitter (RTMP's millisecond
clock). The cost is latency: audio waits for its next frame (~23 ms). ``finish()`` at the end of
the stream writes the held samples with their predecessor's duration.

Why hand-written boxes and not PyAV's mp4 muxer (``movflags=frag_custom+empty_moov+
default_base_moof``): ``frag_custom`` cuts a fragment only on ``av_write_frame(ctx, NULL)``, and
PyAV 18.1's ``OutputContainer.mux`` calls only ``av_interleaved_write_frame``, so a part cannot
be flushed at a chosen unit; its interleaving queue would also delay packets across tracks, and
muxing runs file I/O that must leave the event loop. The boxes these codecs need are ~20 fixed
layouts (ISO/IEC 14496-12, -14, -15; Opus in ISOBMFF), checked against ffprobe in the tests.
Other codecs (AV1, VP8, VP9, MP3) are refused (``UnsupportedCodec``), not dropped. HEVC players:
Safari (hvc1), hls.js where the browser's MSE decodes HEVC (Chrome/Edge with a hardware decoder);
elsewhere the MPEG-TS variant or WebRTC's H.264 rendition plays it.

Opus (a WebRTC publisher's audio, no AAC transcode): sample entry ``Opus`` with its ``dOps`` box
(Encapsulation of Opus in ISO Base Media File Format, 4.3: Version 0, OutputChannelCount, PreSkip,
InputSampleRate, OutputGain, ChannelMappingFamily, all big endian), on a 48 kHz track whatever the
input rate (a 20 ms packet: 1800 hub ticks, 960 samples). A source's OpusHead sets them; WebRTC's
``opus/48000/2`` needs none: an Opus unit without one (``opus_config``, or any Opus unit passed to
``CmafWriter``) makes the track from the codec name alone. Players: the CODECS string is ``opus``
(e.g. ``avc1.42e01f,opus``); hls.js plays Opus in fMP4 where the browser's MSE takes
``audio/mp4; codecs="opus"`` (Chromium, Firefox); Safari 17+ on macOS decodes Opus in MP4, but its
LL-HLS playback of Opus is not guaranteed (AAC is what every HLS player takes).
"""
from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from media.codecs import aac, avc, hevc, opus
from media.codecs.errors import CodecError
from media.hub.unit import AUDIO, TIME_BASE, VIDEO, AccessUnit

_VIDEO_ID, _AUDIO_ID = 1, 2
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_LANGUAGE_UND = (ord("u") - 0x60) << 10 | (ord("n") - 0x60) << 5 | (ord("d") - 0x60)
# trun sample_flags (14496-12 8.8.3.1): a sync sample depends on no other; others are non-sync.
_SYNC_FLAGS = 0x02000000
_NON_SYNC_FLAGS = 0x01010000
_TRUN_DATA_OFFSET, _TRUN_DURATION, _TRUN_SIZE, _TRUN_FLAGS, _TRUN_CTS = 0x1, 0x100, 0x200, 0x400, 0x800
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
_OPUS_RATE = 48000  # Opus always decodes at 48 kHz (RFC 7845)
# PreSkip of an Opus track made from the codec name alone: libopus' lookahead at 48 kHz (6.5 ms), what a
# browser's encoder (libopus) puts before its first packet, and what sfu/to_hub.py's OpusHead says
# (opus_head()'s default), so an init from the name alone is the one from that head, byte for byte. A
# live viewer joins mid-stream, where nothing was padded: the decoder drops the first 312 samples it
# makes, which come from a decoder without history (RFC 7845 4.6 wants 80 ms of pre-roll to converge),
# so nothing worth hearing is lost; 0 would play those too.
_OPUS_PRE_SKIP = 312


class CmafError(ValueError):
    """The units cannot be written as given."""


class UnsupportedCodec(CmafError):
    pass


# --- Boxes ---------------------------------------------------------------------------------


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", version << 24 | flags), *payload)


def _descriptor(tag: int, body: bytes) -> bytes:
    """An MPEG-4 descriptor (14496-1 8.3.3) with its size in the 7-bit-per-byte form."""
    size, length = len(body), []
    while True:
        length.insert(0, size & 0x7F | (0x80 if length else 0))
        size >>= 7
        if not size:
            break
    return bytes([tag, *length]) + body


# --- Tracks --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Sample:
    dts: int  # 90 kHz
    pts: int
    payload: bytes
    keyframe: bool


@dataclass(slots=True)
class _Track:
    track_id: int
    kind: str
    codec: str
    timescale: int
    entry: bytes  # the sample entry box (avc1, mp4a, Opus)
    width: int = 0
    height: int = 0
    pending: list[_Sample] = field(default_factory=list)

    def ticks(self, dts: int) -> int:
        """A 90 kHz time on this track's clock; the same rounding everywhere, so tfdt + durations agree."""
        return dts if self.timescale == TIME_BASE else (dts * self.timescale + TIME_BASE // 2) // TIME_BASE


def _video_entry(codec: str, record: bytes) -> tuple[bytes, int, int]:
    """The visual sample entry (14496-12 12.1.3): `avc1`/`avcC`, or `hvc1`/`hvcC` (14496-15 8.4.1:
    the form Apple's HLS requires; parameter sets repeated in-band are allowed by decoders)."""
    if codec == "hevc":
        try:
            size = hevc.sps_size(hevc.record_sps(record))
        except CodecError as exc:
            raise CmafError(str(exc)) from None
        fourcc, box, width, height = b"hvc1", b"hvcC", size.width, size.height
    else:
        config = avc.decoder_config_parse(record)
        if not config.sps:
            raise CmafError("AVCDecoderConfigurationRecord has no SPS")
        sps = avc.sps_parse(config.sps[0])
        fourcc, box, width, height = b"avc1", b"avcC", sps.width, sps.height
    entry = _box(fourcc, bytes(6), struct.pack(">H", 1), bytes(16),
                 struct.pack(">HHIIIH", width, height, 0x00480000, 0x00480000, 0, 1),
                 bytes(32), struct.pack(">Hh", 0x18, -1), _box(box, record))
    return entry, width, height


def _audio_entry(fourcc: bytes, channels: int, rate: int, *config: bytes) -> bytes:
    # The 16.16 rate field cannot hold 96 kHz: mdhd's timescale is the real rate.
    return _box(fourcc, bytes(6), struct.pack(">H", 1), bytes(8),
                struct.pack(">HHHHI", channels, 16, 0, 0, (rate << 16) & 0xFFFFFFFF), *config)


def _aac_entry(asc: bytes) -> tuple[bytes, int]:
    config = aac.config_parse(asc)
    decoder_config = _descriptor(4, struct.pack(">BB3sII", 0x40, 0x15, bytes(3), 0, 0) + _descriptor(5, asc))
    es = _descriptor(3, struct.pack(">HB", 0, 0) + decoder_config + _descriptor(6, b"\x02"))
    entry = _audio_entry(b"mp4a", config.channels or 2, config.sample_rate, _full_box(b"esds", 0, 0, es))
    return entry, config.sample_rate


def _opus_entry(head: bytes) -> bytes:
    """dOps is OpusHead in big endian without its magic (Encapsulation of Opus in ISOBMFF, 4.3.2)."""
    channels, input_rate = opus.opus_head_parse(head)
    _, _, _, pre_skip, _, gain, family = struct.unpack_from("<8sBBHIhB", head)
    mapping = head[19:21 + channels] if family else b""  # stream count, coupled count, channel mapping
    dops = struct.pack(">BBHIhB", 0, channels, pre_skip, input_rate, gain, family) + mapping
    return _audio_entry(b"Opus", channels, _OPUS_RATE, _box(b"dOps", dops))


def opus_config(dts: int = 0, channels: int = 2) -> AccessUnit:
    """An Opus config unit from the codec name alone: WebRTC's opus/48000/2 brings no OpusHead."""
    return AccessUnit(AUDIO, "opus", dts, dts, opus.opus_head(channels, _OPUS_RATE, _OPUS_PRE_SKIP), config=True)


def _track(unit: AccessUnit) -> _Track:
    if unit.kind == VIDEO and unit.codec in ("h264", "hevc"):
        entry, width, height = _video_entry(unit.codec, unit.payload)
        return _Track(_VIDEO_ID, VIDEO, unit.codec, TIME_BASE, entry, width, height)
    if unit.kind == AUDIO and unit.codec == "aac":
        entry, rate = _aac_entry(unit.payload)
        return _Track(_AUDIO_ID, AUDIO, "aac", rate, entry)
    if unit.kind == AUDIO and unit.codec == "opus":
        return _Track(_AUDIO_ID, AUDIO, "opus", _OPUS_RATE, _opus_entry(unit.payload))
    raise UnsupportedCodec(f"CMAF writer takes h264, hevc, aac and opus, not {unit.kind}/{unit.codec}")


def _trak(track: _Track) -> bytes:
    video = track.kind == VIDEO
    tkhd = _full_box(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, track.track_id, 0, 0), bytes(8),
                     struct.pack(">hhhH", 0, 0, 0 if video else 0x0100, 0), _MATRIX,
                     struct.pack(">II", track.width << 16, track.height << 16))
    mdhd = _full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, track.timescale, 0, _LANGUAGE_UND, 0))
    handler, name = (b"vide", b"VideoHandler\0") if video else (b"soun", b"SoundHandler\0")
    hdlr = _full_box(b"hdlr", 0, 0, struct.pack(">I4s", 0, handler), bytes(12), name)
    media_header = _full_box(b"vmhd", 0, 1, bytes(8)) if video else _full_box(b"smhd", 0, 0, bytes(4))
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
    stbl = _box(b"stbl", _full_box(b"stsd", 0, 0, struct.pack(">I", 1), track.entry),
                *(_full_box(kind, 0, 0, bytes(4)) for kind in (b"stts", b"stsc")),
                _full_box(b"stsz", 0, 0, bytes(8)), _full_box(b"stco", 0, 0, bytes(4)))
    return _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, _box(b"minf", media_header, dinf, stbl)))


def _init(tracks: list[_Track]) -> bytes:
    ftyp = _box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcmp41")
    mvhd = _full_box(b"mvhd", 0, 0, struct.pack(">IIIIIH", 0, 0, 1000, 0, 0x00010000, 0x0100), bytes(10),
                     _MATRIX, bytes(24), struct.pack(">I", max(t.track_id for t in tracks) + 1))
    trex = (_full_box(b"trex", 0, 0, struct.pack(">IIIII", t.track_id, 1, 0, 0, 0)) for t in tracks)
    return ftyp + _box(b"moov", mvhd, *(_trak(t) for t in tracks), _box(b"mvex", *trex))


# --- Fragments -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CmafPart:
    data: bytes  # moof + mdat
    start: int  # dts (90 kHz) of its first sample on the main track (video when there is one)
    ticks: int  # its duration on the main track (90 kHz): up to the dts of the next part's first sample
    independent: bool  # starts with a keyframe (always, audio only): a segment may start here
    sequence: int  # mfhd sequence number, 1 for the first part

    @property
    def duration(self) -> float:
        """Seconds, as EXT-X-PART:DURATION wants it."""
        return self.ticks / TIME_BASE


@dataclass(frozen=True, slots=True)
class _Run:
    track: _Track
    samples: list[_Sample]
    durations: list[int]  # on the track's clock

    def traf(self, data_offset: int) -> bytes:
        video = self.track.kind == VIDEO
        flags = _TRUN_DATA_OFFSET | _TRUN_DURATION | _TRUN_SIZE | (_TRUN_FLAGS | _TRUN_CTS if video else 0)
        rows = []
        for sample, duration in zip(self.samples, self.durations, strict=True):
            row = struct.pack(">II", duration, len(sample.payload))
            if video:
                row += struct.pack(">Ii", _SYNC_FLAGS if sample.keyframe else _NON_SYNC_FLAGS, sample.pts - sample.dts)
            rows.append(row)
        # Version 1: composition offsets are signed.
        trun = _full_box(b"trun", 1, flags, struct.pack(">Ii", len(rows), data_offset), *rows)
        tfhd = _full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, struct.pack(">I", self.track.track_id))
        tfdt = _full_box(b"tfdt", 1, 0, struct.pack(">Q", self.track.ticks(self.samples[0].dts)))
        return _box(b"traf", tfhd, tfdt, trun)

    @property
    def size(self) -> int:
        return sum(len(s.payload) for s in self.samples)


def _moof(sequence: int, runs: list[_Run]) -> bytes:
    """moof + mdat; trun data offsets count from the moof's first byte (default-base-is-moof)."""
    # The moof's size does not depend on the offsets' values: build once to measure, then for real.
    moof_size = len(_box(b"moof", _full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)), *(r.traf(0) for r in runs)))
    offset, trafs = moof_size + 8, []
    for run in runs:
        trafs.append(run.traf(offset))
        offset += run.size
    moof = _box(b"moof", _full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)), *trafs)
    return moof + _box(b"mdat", *(s.payload for r in runs for s in r.samples))


# --- Writer --------------------------------------------------------------------------------


class CmafWriter:
    """One stream's fMP4: ``init`` once, then ``push`` units and ``flush`` parts (see the module doc)."""

    def __init__(self, configs: Iterable[AccessUnit], *, after_sequence: int = 0) -> None:
        """`configs`: the stream's config units, at most one per kind. Opus needs no OpusHead: a
        config unit without a payload, or an Opus media unit, stands for `opus_config()` (stereo).
        `after_sequence`: the last fragment sequence number of an earlier writer of the same
        stream (a new init section), so numbers keep increasing. Raises UnsupportedCodec."""
        self._configs: dict[str, AccessUnit] = {}
        for unit in configs:
            if unit.kind == AUDIO and unit.codec == "opus" and not (unit.config and unit.payload):
                unit = opus_config(unit.dts)
            if not unit.config or unit.kind in self._configs:
                raise CmafError(f"expected one config unit per kind, got {unit.kind}/{unit.codec}")
            self._configs[unit.kind] = unit
        if not self._configs:
            raise CmafError("no config units: no tracks")
        self._tracks = {kind: _track(unit) for kind, unit in sorted(self._configs.items(), key=_video_first)}
        self.init: bytes = _init(list(self._tracks.values()))
        self.sequence = after_sequence  # of the newest fragment (mfhd)

    @property
    def main_kind(self) -> str:
        """The track whose time a part's `start` and `ticks` measure: video when there is one."""
        return VIDEO if VIDEO in self._tracks else AUDIO

    def push(self, unit: AccessUnit) -> None:
        """Buffer one unit. Raises CmafError for a unit of no track, a changed config (a new init
        is needed: a new writer) or a dts that does not increase on its track."""
        track = self._tracks.get(unit.kind)
        if track is None or unit.codec != track.codec:
            raise CmafError(f"no {unit.kind}/{unit.codec} track")
        if unit.config:
            if unit.payload != self._configs[unit.kind].payload:
                raise CmafError(f"{unit.codec} config changed: start a new writer (new init section)")
            return
        if track.pending and track.ticks(unit.dts) <= track.ticks(track.pending[-1].dts):
            raise CmafError(f"{unit.kind} dts {unit.dts} does not increase on the track's clock")
        keyframe = unit.keyframe or unit.kind == AUDIO
        track.pending.append(_Sample(unit.dts, unit.pts, unit.payload, keyframe))

    def pending_start(self) -> int | None:
        """dts of the first sample the next part holds on the main track (None: none yet)."""
        pending = self._tracks[self.main_kind].pending
        return pending[0].dts if pending else None

    def flush(self) -> CmafPart | None:
        """A part of every sample whose duration is known: all pushed but each track's newest.
        None when the main track has none (a part must advance the main track's time)."""
        if len(self._tracks[self.main_kind].pending) < 2:
            return None
        return self._part([run for track in self._tracks.values() if (run := _take(track, final=False))])

    def finish(self) -> CmafPart | None:
        """The end of the stream: a last part of everything held, the newest samples lasting as
        long as their predecessors (or a typical frame when alone)."""
        runs = [run for track in self._tracks.values() if (run := _take(track, final=True))]
        return self._part(runs) if runs else None

    def _part(self, runs: list[_Run]) -> CmafPart:
        self.sequence += 1
        main = next((run for run in runs if run.track.kind == self.main_kind), runs[0])
        start = main.samples[0].dts
        end = main.track.pending[0].dts if main.track.pending else main.samples[-1].dts + _last_ticks(main)
        return CmafPart(_moof(self.sequence, runs), start, end - start, main.samples[0].keyframe, self.sequence)


def _video_first(item: tuple[str, AccessUnit]) -> int:
    return 0 if item[0] == VIDEO else 1


def _take(track: _Track, *, final: bool) -> _Run | None:
    """The track's samples with known durations (all of them when `final`), removed from pending."""
    samples = track.pending if final else track.pending[:-1]
    if not samples:
        return None
    track.pending = [] if final else track.pending[-1:]
    times = [track.ticks(s.dts) for s in samples]
    if track.pending:
        times.append(track.ticks(track.pending[0].dts))
    else:
        times.append(times[-1] + (times[-1] - times[-2] if len(times) > 1 else _typical(track)))
    return _Run(track, samples, [b - a for a, b in zip(times, times[1:], strict=False)])


def _typical(track: _Track) -> int:
    """One frame on the track's clock when nothing else tells: 1/30 s, 1024 AAC or 960 Opus samples."""
    return {"h264": TIME_BASE // 30, "hevc": TIME_BASE // 30, "aac": 1024, "opus": 960}[track.codec]


def _last_ticks(run: _Run) -> int:
    """The duration of a run's last sample in 90 kHz ticks."""
    return run.durations[-1] * TIME_BASE // run.track.timescale
