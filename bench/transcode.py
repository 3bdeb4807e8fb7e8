"""Bridge CPU: our AAC -> Opus bridge against an ffmpeg command line doing the same conversion.

    python -m bench.transcode [--runs 3] [--no-doc]

Input: the bench clip's AAC track (bench/source.py: 24 s, 44.1 kHz stereo, 128 kbit/s). Ours:
`media.bridges.audio.AacToOpus` fed the clip's AAC units as the hub holds them (from the RTMP
mapping, `media.codecs.flv_units`), in this process, CPU = process time. ffmpeg: `ffmpeg -i clip
-vn -c:a libopus -ar 48000 -ac 2 -b:a 96k -frame_duration 20 -f null -` (the same decoder,
resampling and encoder settings), CPU = the child's user + system time. Both run flat out, so CPU
seconds per second of media is the share of one core a live stream costs; best of `--runs`.
The table replaces the section between `<!-- bench:transcode:start -->` and `...:end -->` in
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import time

from media.bridges.audio import AacToOpus
from media.codecs import flv
from media.codecs.flv_units import FlvUnits

from .report import machine_info, write_doc
from .source import SECONDS, source_flv
from .tools import require

START, END = "<!-- bench:transcode:start -->", "<!-- bench:transcode:end -->"


def aac_units(path) -> list:
    mapping = FlvUnits()
    units = []
    for tag in flv.FlvReader().feed(path.read_bytes()):
        if tag.tag_type == flv.TAG_AUDIO and (unit := mapping.audio(tag.payload, tag.timestamp)) is not None:
            units.append(unit)
    return units


def ours(units) -> tuple[float, int]:
    start = time.process_time()
    bridge = AacToOpus(units[0].payload)
    frames = sum(len(bridge.feed(unit)) for unit in units[1:])
    return time.process_time() - start, frames


def ffmpeg(path) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-i", str(path), "-vn",
                    "-c:a", "libopus", "-ar", "48000", "-ac", "2", "-b:a", "96k", "-frame_duration", "20",
                    "-f", "null", "-"], check=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    clip = source_flv()
    units = aac_units(clip)
    media_s = SECONDS
    ours_runs = [ours(units) for _ in range(args.runs)]
    ffmpeg_runs = [ffmpeg(clip) for _ in range(args.runs)]
    ours_cpu, frames = min(ours_runs)
    ffmpeg_cpu = min(ffmpeg_runs)
    ours_pct, ffmpeg_pct = 100 * ours_cpu / media_s, 100 * ffmpeg_cpu / media_s
    machine = machine_info(None)
    table = "\n".join([
        f"Run {machine['date_utc']} at commit {machine['git_commit']}: {machine['nproc']} cores "
        f"({machine['cpu_model']}), Python {machine['python']}. Input: the bench clip's AAC "
        f"({len(units) - 1} frames, {media_s} s); best of {args.runs} runs; % of one core per live stream.",
        "",
        "| conversion | MicroVibe bridge | ffmpeg command line | ratio |",
        "|---|---|---|---|",
        f"| AAC -> Opus (48 kHz stereo, 20 ms, 96 kbit/s) | {ours_pct:.2f} % ({frames} Opus frames) | "
        f"{ffmpeg_pct:.2f} % | {ours_pct / ffmpeg_pct:.2f}x |",
    ])
    print(table)
    if not args.no_doc:
        write_doc(table, "", start=START, end=END, heading="### Bridge CPU")
        print("transcode section written to docs/benchmarks.md")


if __name__ == "__main__":
    main()
