"""Bridge CPU and latency: each conversion bridge against an ffmpeg command line doing the same.

    python -m bench.transcode [--runs 3] [--no-doc] [--no-live] [--join 2.5] [--warmup 2]

Conversions, each on a 24 s 720p30 input (bench/source.py's clip and picture):
- AAC -> Opus (an RTMP publisher's audio for WebRTC): the bench clip's AAC (44.1 kHz stereo).
- VP8 -> H.264 + Opus -> AAC (a browser's WHIP stream for HLS/FLV/RTMP): the same picture and
  length encoded once by the system ffmpeg as a browser does (libvpx realtime, cpu-used 8,
  2 Mbit/s, no alt-ref, keyframes every 2 s; libopus 48 kHz stereo 20 ms) into WebM, demuxed by
  PyAV into hub units (`webm_units`).
- H.264 with B-frames -> without (an OBS stream for WebRTC): the bench clip itself (x264 veryfast,
  whose default is up to 3 B-frames: 446 of its 720 frames are B-frames) as RTMP gives it to the
  hub (`media.codecs.flv_units`).

CPU ("flat out"): ours = the `media.bridges` converters the server's Rendition makes for these
(`VideoToH264` with the target's profile, `AacToOpus`, `OpusToAac`) fed every unit in this
process, CPU = process time (all threads: x264's and the decoders'). ffmpeg = `ffmpeg_command`:
the same decoders, encoders and settings (preset, tune, profile, bitrate, VBV, keyframe
interval, slice threads; the x264 settings both write into their first IDR's SEI are compared),
CPU = the child's user + system time. CPU seconds per second of media is the share of one core a
live stream costs; best of `--runs`, the runs of both interleaved.

Latency ("live", `--no-live` skips it): the units are written at real-time pace (by their dts)
into a hub `Stream` on an asyncio loop; `--join` s in, a viewer joins the way the server makes it
join (`media.bridges.rendition.playable(stream, target)`, a sink on the returned stream, which runs
the bridges in their threads: `media.bridges.runner.Bridge`). After `--warmup` s more, to the end
of the clip, every converted unit's latency = its write into the rendition's stream - the arrival
of the source unit it came from (the same stamp as `Rendition.latency`), per kind; p50 / p99.
With B-frames part of it is the source's own reordering (a frame sent before the B-frames shown
before it cannot come out of any decoder before they arrive): a second figure counts from when a
decoder of the source's reorder depth could give the frame out (`release_times`).

The tables replace the section between `<!-- bench:transcode:start -->` and `...:end -->` in
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import re
import resource
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from media.bridges import video as video_module
from media.bridges.audio import AacToOpus, OpusToAac
from media.bridges.rendition import H264_AAC, WEBRTC, Target, playable, renditions
from media.bridges.video import VideoToH264
from media.codecs import avc
from media.codecs.flv_units import flv_access_units
from media.config import MediaConfig
from media.hub.stream import Entry, Stream
from media.hub.unit import AUDIO, TIME_BASE, VIDEO, AccessUnit

from .procstat import machine_busy_seconds
from .report import machine_info, write_doc
from .source import OUT, SECONDS, source_flv
from .tools import require

START, END = "<!-- bench:transcode:start -->", "<!-- bench:transcode:end -->"
WIDTH, HEIGHT, FPS = 1280, 720, 30
# What VideoToH264 picks for 1280x720 (its bitrate, also its VBV max rate and buffer: 1 s).
X264_BITRATE = round(video_module.BITS_PER_PIXEL * WIDTH * HEIGHT * video_module.NOMINAL_FPS)
FRAGMENT = MediaConfig().hls_fragment  # the server's keyframe interval for a re-encode (s)
GOP = round(FRAGMENT * FPS)
# x264 settings that differ by design: ours forces an IDR every FRAGMENT s of pts (keyint infinite),
# ffmpeg's -g makes one every GOP frames; with scenecut=0 both give IDRs on the same frames.
KEYINT_OPTIONS = ("keyint", "keyint_min")


def vp8_clip(seconds: int = SECONDS) -> Path:
    """The clip's picture and length as a browser would send it: VP8 + Opus in WebM, made once."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"source-720p30-{seconds}s-vp8.webm"
    if path.exists() and path.stat().st_size > 0:
        return path
    tmp = path.with_suffix(".tmp.webm")
    cmd = [
        require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(seconds),
        "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "2000k", "-minrate", "2000k",
        "-maxrate", "2000k", "-g", str(GOP), "-keyint_min", str(GOP), "-auto-alt-ref", "0",
        "-lag-in-frames", "0", "-error-resilient", "1",
        "-c:a", "libopus", "-ar", "48000", "-ac", "2", "-b:a", "64k", "-frame_duration", "20",
        "-f", "webm", str(tmp),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=300)
    tmp.rename(path)
    return path


def flv_units(path: Path, kinds: tuple[str, ...] = (VIDEO, AUDIO)) -> list[AccessUnit]:
    """The clip's units as the hub holds them from an RTMP publisher (config units included)."""
    return flv_access_units(path.read_bytes(), kinds)


def webm_units(path: Path) -> list[AccessUnit]:
    """VP8 frames and Opus packets as they are, on the hub's 90 kHz clock (no config units: a
    WebRTC publisher has none)."""
    units = []
    with av.open(str(path)) as container:
        for packet in container.demux():
            if not packet.size:
                continue
            tick = packet.time_base * TIME_BASE
            kind = VIDEO if packet.stream.type == "video" else AUDIO
            units.append(AccessUnit(kind, packet.stream.codec_context.name, round(packet.dts * tick),
                                    round(packet.pts * tick), bytes(packet), keyframe=packet.is_keyframe))
    return units


def _x264(profile: str) -> list[str]:
    """ffmpeg's libx264 output options matching VideoToH264 (video.py's `_open_encoder`)."""
    return ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-profile:v", profile,
            "-b:v", str(X264_BITRATE), "-maxrate", str(X264_BITRATE), "-bufsize", str(X264_BITRATE),
            "-g", str(GOP), "-sc_threshold", "0"]


def _video_maker(codec: str, profile: str) -> Callable[[bytes | None], VideoToH264]:
    return lambda config: VideoToH264(codec, config, keyframe_interval=FRAGMENT, profile=profile)


@dataclass
class Case:
    key: str
    label: str
    clip: Callable[[], Path]
    units: Callable[[Path], list[AccessUnit]]
    # kind -> (make(config payload or None), needs a config unit first), as rendition.py makes them
    makers: dict[str, tuple[Callable[[bytes | None], object], bool]]
    input_options: list[str]  # ffmpeg options before -i: the decoders ours uses
    output_options: list[str]  # ffmpeg options after -i, before -f null -


CASES = [
    Case("aac-opus", "AAC -> Opus (48 kHz stereo, 20 ms, 96 kbit/s)", source_flv,
         lambda p: flv_units(p, (AUDIO,)), {AUDIO: (AacToOpus, True)},
         [], ["-vn", "-c:a", "libopus", "-ar", "48000", "-ac", "2", "-b:a", "96k", "-frame_duration", "20"]),
    Case("vp8-opus", f"VP8 -> H.264 ({H264_AAC.profile.title()}) + Opus -> AAC (128 kbit/s)", vp8_clip,
         webm_units, {VIDEO: (_video_maker("vp8", H264_AAC.profile), False), AUDIO: (OpusToAac, False)},
         ["-thread_type", "slice", "-c:a", "libopus"],
         [*_x264(H264_AAC.profile), "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"]),
    Case("h264-bframes", f"H.264 with B-frames -> without ({WEBRTC.profile.title()})", source_flv,
         lambda p: flv_units(p, (VIDEO,)), {VIDEO: (_video_maker("h264", WEBRTC.profile), True)},
         ["-thread_type", "slice"], ["-an", *_x264(WEBRTC.profile)]),
]


def ffmpeg_command(case: Case, clip: Path) -> list[str]:
    return [require("ffmpeg"), "-hide_banner", "-nostats", "-v", "verbose", *case.input_options, "-i", str(clip),
            *case.output_options, "-f", "null", "-"]


def shown_command(case: Case, clip: Path) -> str:
    """The command line as the doc shows it."""
    return " ".join(["ffmpeg", *case.input_options, "-i", clip.name, *case.output_options, "-f", "null", "-"])


# -- flat out: CPU ---------------------------------------------------------------------------------


@dataclass
class Work:
    cpu: float  # s
    frames: dict[str, int]  # kind -> frames out (config units left out)
    bytes: dict[str, int]  # kind -> payload bytes out

    def describe(self, media_s: float) -> str:
        parts = []
        for kind in (VIDEO, AUDIO):
            if kind in self.frames:
                parts.append(f"{self.frames[kind]} {kind} frames, {8 * self.bytes[kind] / media_s / 1000:.0f} kbit/s")
        return "; ".join(parts)


def ours(case: Case, units: list[AccessUnit]) -> tuple[Work, list[AccessUnit]]:
    """Every unit through the converters, as `Bridge._convert` does: one per kind, made at its
    config unit (or at its first frame when the codec has none)."""
    start = time.process_time()
    converters: dict[str, object] = {}
    out: list[AccessUnit] = []
    for unit in units:
        make, needs_config = case.makers[unit.kind]
        if unit.config:
            converters[unit.kind] = make(unit.payload)
            continue
        converter = converters.get(unit.kind)
        if converter is None:
            if needs_config:
                continue
            converter = converters[unit.kind] = make(None)
        out += converter.feed(unit)  # type: ignore[attr-defined]
    cpu = time.process_time() - start
    frames: dict[str, int] = defaultdict(int)
    size: dict[str, int] = defaultdict(int)
    for unit in out:
        if not unit.config:
            frames[unit.kind] += 1
            size[unit.kind] += len(unit.payload)
    return Work(cpu, dict(frames), dict(size)), out


_ENCODED = re.compile(r"Output stream #\d+:\d+ \((video|audio)\): (\d+) frames encoded.*?\((\d+) bytes\)")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ffmpeg(case: Case, clip: Path) -> Work:
    before = _children_cpu()
    done = subprocess.run(ffmpeg_command(case, clip), check=True, timeout=300, capture_output=True, text=True)
    cpu = _children_cpu() - before
    found = _ENCODED.findall(done.stderr)
    return Work(cpu, {kind: int(n) for kind, n, _ in found}, {kind: int(b) for kind, _, b in found})


def x264_options(annexb_or_avcc: list[bytes]) -> dict[str, str]:
    """The settings x264 writes into the SEI of its first frame ("... options: cabac=1 ref=1 ...")."""
    sei = next(n for n in annexb_or_avcc if avc.nal_type(n) == avc.NAL_SEI and b" options: " in n)
    words = sei.split(b" options: ")[1].split(b"\x00")[0].decode().split()
    return dict(word.split("=", 1) for word in words if "=" in word)


def x264_difference(case: Case, clip: Path, out: list[AccessUnit]) -> str:
    """How ffmpeg's x264 settings differ from ours, besides the keyframe interval's form."""
    first = next(u for u in out if u.kind == VIDEO and u.keyframe and not u.config)
    ours_opts = x264_options(avc.split_avcc(first.payload))
    cmd = [require("ffmpeg"), "-hide_banner", "-loglevel", "error", *case.input_options, "-i", str(clip),
           *case.output_options, "-an", "-frames:v", "1", "-f", "h264", "-"]
    theirs = x264_options(avc.split_annexb(subprocess.run(cmd, check=True, timeout=60, capture_output=True).stdout))
    differ = sorted(k for k in ours_opts.keys() | theirs.keys()
                    if k not in KEYINT_OPTIONS and ours_opts.get(k) != theirs.get(k))
    if not differ:
        return "the same"
    return "differ in " + ", ".join(f"{k} ({ours_opts.get(k)} / {theirs.get(k)})" for k in differ)


# -- live: latency ---------------------------------------------------------------------------------


class Watcher:
    """A viewer of the rendition (so it runs), noting when each converted unit comes out."""

    viewer_count = 1

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.measuring = False
        self.records: list[tuple[AccessUnit, float]] = []

    def on_entry(self, entry: Entry) -> None:
        if self.measuring and not entry.unit.config:
            self.records.append((entry.unit, self.clock()))

    def stream_ended(self, reason: str) -> None:
        self.measuring = False


def percentiles(samples: list[float]) -> tuple[float, float] | None:
    """p50 / p99 in ms, as `media.bridges.rendition.latency_ms` computes them."""
    s = sorted(samples)
    if not s:
        return None
    return s[len(s) // 2] * 1000, s[min(len(s) - 1, len(s) * 99 // 100)] * 1000


def reorder_depth(units: list[AccessUnit]) -> int:
    """How many frames the bridge's decoder holds back to reorder this video (0 without B-frames):
    the frames it takes before the first comes out, decoded as VideoToH264 sets its decoder up."""
    video = [u for u in units if u.kind == VIDEO]
    config = next((u.payload for u in video if u.config), None)
    decoder = av.CodecContext.create(video_module.DECODERS[video[0].codec], "r")
    if config:
        decoder.extradata = config
    decoder.thread_type = "SLICE"
    for fed, unit in enumerate((u for u in video if not u.config), start=1):
        packet = av.Packet(unit.payload)
        packet.pts, packet.dts, packet.time_base = unit.pts, unit.dts, video_module.HUB_TICK
        if decoder.decode(packet):
            return fed - 1
        if fed > 16:
            break
    raise RuntimeError("the decoder gave no frame")


def release_times(arrivals: list[tuple[int, float]], depth: int) -> dict[int, float]:
    """pts -> the arrival that lets a decoder reordering `depth` frames deep give that frame out
    (the arrival in decode order at which it is the earliest of more than `depth` held frames):
    the earliest a frame of the source can be shown, whatever is done with it next."""
    held: list[tuple[int, float]] = []
    released = {}
    for pts, arrived in arrivals:
        held.append((pts, arrived))
        if len(held) > depth:
            first = min(held)
            held.remove(first)
            released[first[0]] = arrived
    return released


@dataclass
class LiveRun:
    key: str
    stream: str  # for the table
    clip: Callable[[], Path]
    units: Callable[[Path], list[AccessUnit]]
    protocol: str  # the publisher's
    target: Target  # what the viewer watches through
    rows: dict[str, str]  # kind -> the conversion


LIVE = [
    LiveRun("rtmp-webrtc", "RTMP (H.264 with B-frames + AAC), WebRTC viewer", source_flv, flv_units, "rtmp", WEBRTC,
            {AUDIO: "AAC -> Opus", VIDEO: "H.264 with B-frames -> without"}),
    LiveRun("whip-flv", "WHIP (VP8 + Opus), HLS/HTTP-FLV/RTMP viewer", vp8_clip, webm_units, "webrtc", H264_AAC,
            {VIDEO: "VP8 -> H.264", AUDIO: "Opus -> AAC"}),
]


async def live(run: LiveRun, units: list[AccessUnit], join: float, warmup: float) -> dict:
    stream = Stream(f"bench-{run.key}", MediaConfig())
    stream.source_protocol = run.protocol
    for kind in run.rows:
        stream.declare(kind, next(u.codec for u in units if u.kind == kind))
    clock = stream.clock
    watcher = Watcher(clock)
    rendition = None
    start_at = join + warmup
    n0 = cpu0 = wall0 = busy0 = 0.0
    video_arrivals: list[tuple[int, float]] = []  # (pts, arrival), in decode order
    audio_arrivals: list[tuple[int, float]] = []  # (dts, arrival)
    t0 = clock()
    for unit in sorted(units, key=lambda u: (not u.config, u.dts)):  # configs first, then by dts
        due = t0 + max(0, unit.dts) / TIME_BASE
        if (wait := due - clock()) > 0:
            await asyncio.sleep(wait)
        if rendition is None and clock() - t0 >= join:
            watched = playable(stream, run.target)
            watched.add_sink(watcher)
            watched.viewers_changed()
            [rendition] = renditions(stream)
        if rendition is not None and not watcher.measuring and clock() - t0 >= start_at:
            watcher.measuring = True
            n0, cpu0, wall0, busy0 = len(rendition.latency), time.process_time(), clock(), machine_busy_seconds()
        arrived = clock()
        if not unit.config:
            if unit.kind == VIDEO:
                video_arrivals.append((unit.pts, arrived))
            else:
                audio_arrivals.append((unit.dts, arrived))
        stream.write(unit, arrived)
    await asyncio.sleep(0.5)  # the last units through the bridges
    cpu, wall, busy = time.process_time() - cpu0, clock() - wall0, machine_busy_seconds() - busy0
    watcher.measuring = False
    assert rendition is not None
    # The source unit a converted one came from, by the rendition's rule (`_Arrivals`): video by
    # pts, audio the last source unit at or before its dts (the audio has no reordering).
    arrival = dict(video_arrivals)
    depth = reorder_depth(units) if VIDEO in run.rows else 0
    released = release_times(video_arrivals, depth)
    audio_dts = [dts for dts, _ in audio_arrivals]
    per_kind = {}
    for kind in run.rows:
        latency, own = [], []
        for unit, out in (r for r in watcher.records if r[0].kind == kind):
            if kind == VIDEO:
                came, ready = arrival.get(unit.pts), released.get(unit.pts)
            else:
                i = bisect.bisect_right(audio_dts, unit.dts)
                came = ready = audio_arrivals[i - 1][1] if i else None
            if came is not None:
                latency.append(out - came)
                own.append(out - (ready if ready is not None else came))
        per_kind[kind] = {"frames": len(latency), "p50_p99_ms": percentiles(latency),
                          "own_p50_p99_ms": percentiles(own)}
    pooled = list(rendition.latency)[int(n0):]
    result = {
        "plans": dict(rendition.plans),
        "per_kind": per_kind,
        "pooled": {"samples": len(pooled), "p50_p99_ms": percentiles(pooled)},
        "dropped": {b.kind: b.dropped for b in rendition.bridges.values()},
        "window_s": wall,
        "process_cpu_pct": 100 * cpu / wall,
        "other_cpu_pct": max(0.0, 100 * (busy - cpu) / wall),
        "reorder_depth": depth,
    }
    stream.close("publisher_left")
    await asyncio.sleep(0.1)
    return result


# -- the tables ------------------------------------------------------------------------------------


def _ms(value: tuple[float, float] | None) -> str:
    return "-" if value is None else f"{value[0]:.1f} / {value[1]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--no-live", action="store_true", help="skip the latency runs")
    parser.add_argument("--join", type=float, default=2.5, help="s of media before the viewer joins")
    parser.add_argument("--warmup", type=float, default=2.0, help="s after the join before the window")
    args = parser.parse_args()
    clips = {case.key: case.clip() for case in CASES}
    units = {case.key: case.units(clips[case.key]) for case in CASES}
    media_s = SECONDS
    ours_runs: dict[str, list[Work]] = defaultdict(list)
    ffmpeg_runs: dict[str, list[Work]] = defaultdict(list)
    outputs: dict[str, list[AccessUnit]] = {}
    wall0, busy0 = time.monotonic(), machine_busy_seconds()
    own0 = time.process_time() + _children_cpu()
    for _ in range(args.runs):
        for case in CASES:  # interleaved, so a noisy spell hits both sides alike
            work, outputs[case.key] = ours(case, units[case.key])
            ours_runs[case.key].append(work)
            ffmpeg_runs[case.key].append(ffmpeg(case, clips[case.key]))
    wall = time.monotonic() - wall0
    other_pct = max(0.0, 100 * (machine_busy_seconds() - busy0 - (time.process_time() + _children_cpu() - own0)) / wall)
    x264 = {case.key: x264_difference(case, clips[case.key], outputs[case.key])
            for case in CASES if VIDEO in case.makers}

    machine = machine_info(None)
    lines = [
        f"Run {machine['date_utc']} at commit {machine['git_commit']}: {machine['nproc']} cores "
        f"({machine['cpu_model']}), Python {machine['python']}, PyAV {av.__version__}, "
        f"{_ffmpeg_version()}. Inputs: {media_s} s of 720p30 (`{clips['aac-opus'].name}`, "
        f"`{clips['vp8-opus'].name}`); best of {args.runs} runs, interleaved; % of one core per live stream "
        f"(other processes used {other_pct:.0f} % of a core meanwhile).",
        "",
        "| conversion | MicroVibe bridge | ffmpeg command line | ratio |",
        "|---|---|---|---|",
    ]
    commands = []
    for case in CASES:
        mine = min(ours_runs[case.key], key=lambda w: w.cpu)
        theirs = min(ffmpeg_runs[case.key], key=lambda w: w.cpu)
        ours_pct, ffmpeg_pct = 100 * mine.cpu / media_s, 100 * theirs.cpu / media_s
        lines.append(f"| {case.label} | {ours_pct:.2f} % ({mine.describe(media_s)}) | "
                     f"{ffmpeg_pct:.2f} % ({theirs.describe(media_s)}) | {ours_pct / ffmpeg_pct:.2f}x |")
        commands.append(f"{case.label.split(' (')[0]}: `{shown_command(case, clips[case.key])}`")
    lines += ["", "ffmpeg command lines (each with `-v verbose -nostats` for its frame counts): " + "; ".join(commands)
              + f". x264 settings (the SEI of the first IDR, ours / ffmpeg's), besides the keyframe interval's "
              f"form (ours: an IDR forced every {FRAGMENT:g} s of pts; ffmpeg: `-g {GOP}`): "
              + "; ".join(f"{key}: {diff}" for key, diff in x264.items()) + "."]
    print("\n".join(lines), flush=True)

    if not args.no_live:
        lines += live_section(args)
        print("\n".join(lines[-len(LIVE) * 2 - 7:]))
    if not args.no_doc:
        write_doc("\n".join(lines), "", start=START, end=END, heading="### Bridge CPU")
        print("transcode section written to docs/benchmarks.md")


def live_section(args: argparse.Namespace) -> list[str]:
    results = {run.key: asyncio.run(live(run, run.units(run.clip()), args.join, args.warmup)) for run in LIVE}
    lines = [
        "",
        f"Live, at real-time pace: a viewer joins {args.join:g} s in; the window is from {args.join + args.warmup:g} s "
        f"to the end of the {SECONDS} s clip. Latency = the converted unit's write into the rendition's stream - the "
        "arrival of the source unit it came from; *after the source's reordering* counts from when a decoder "
        "could first give the source frame out instead (B-frames: held until the later-sent frames shown "
        "before it have arrived).",
        "",
        "| conversion | stream, viewer | frames in the window | latency p50 / p99 ms "
        "| after the source's reordering p50 / p99 ms | process CPU % | other CPU % |",
        "|---|---|---|---|---|---|---|",
    ]
    pooled = []
    for run in LIVE:
        result = results[run.key]
        for kind, conversion in run.rows.items():
            figures = result["per_kind"][kind]
            lines.append(f"| {conversion} | {run.stream} | {figures['frames']} | {_ms(figures['p50_p99_ms'])} "
                         f"| {_ms(figures['own_p50_p99_ms'])} | {result['process_cpu_pct']:.1f} "
                         f"| {result['other_cpu_pct']:.1f} |")
        converted = sum(figures["frames"] for figures in result["per_kind"].values())
        pooled.append(f"{run.stream.split(',')[0]}: {_ms(result['pooled']['p50_p99_ms'])} ms over "
                      f"{result['pooled']['samples']} of the {converted} units (video reorder depth "
                      f"{result['reorder_depth']}; "
                      f"{sum(result['dropped'].values())} units dropped by the bridges)")
    lines += ["", "`Rendition.latency` over the same windows, both kinds pooled (what `media.bridges.rendition."
              "latency_ms` reports), p50 / p99: " + "; ".join(pooled) + "."]
    return lines


def _ffmpeg_version() -> str:
    first = subprocess.run([require("ffmpeg"), "-version"], capture_output=True, text=True, timeout=30).stdout
    return " ".join(first.split()[:3]) if first else "ffmpeg"


if __name__ == "__main__":
    main()
