"""Recording: what it costs a live stream, and how long finalizing a long one takes.

    python -m bench.record [--seconds 15] [--warmup 5] [--minutes 10] [--runs 3] [--no-doc]

- CPU while recording: the ingest case (one 720p30 publisher, bench/source.py's clip, no reader)
  on each server with recording off, then on: nginx-rtmp with `record all` (an FLV file per
  stream), MicroVibe with every room recording (RECORDING_DEFAULT=1: a fragmented MP4 written by a
  hub reader in its own thread, flushed every 2 s). The recording cost is the difference, in % of
  one core (process tree CPU, bench/procstat.py), with the bytes each wrote in the window.
- Finalize: a `--minutes` fragmented MP4 made of the clip (looped, `-c copy`, with the recorder's
  movflags and 2 s fragments), then the Celery task's file work (`live.recordings.remux_faststart`:
  PyAV, every packet into a regular MP4 with its index first, then `thumbnail_write`) next to
  `ffmpeg -c copy -movflags +faststart` of the same file; wall and CPU time, best of `--runs`,
  interleaved. Ours is timed inside a fresh Python once Django is set up (a Celery worker has
  done that before the task comes); ffmpeg's figure is its whole process, start included.

The tables replace the section between `<!-- bench:record:start -->` and `...:end -->` in
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import tempfile
import time
import traceback
from pathlib import Path

from . import report
from .microvibe import MicroVibe
from .nginx_rtmp import NginxRtmp
from .run import CASES, ROOT, run_case, start_publisher
from .source import OUT, source_flv
from .tools import require

START, END = "<!-- bench:record:start -->", "<!-- bench:record:end -->"
SERVERS = {"nginx": NginxRtmp, "microvibe": MicroVibe}


def ingest(server, args, source: Path, tmp: Path) -> dict:
    log = tmp / f"ingest-{server.name}-record-{server.record}.log"
    publisher = start_publisher(server, source, log)
    try:
        time.sleep(2.0)
        before = server.recorded_bytes()
        row = run_case(server, publisher, log, CASES["ingest"], args, tmp)
        row["recorded_mib"] = (server.recorded_bytes() - before) / 2**20
    finally:
        publisher.terminate()
        publisher.wait(10)
    print(f"  {server.name} ingest, recording {'on' if server.record else 'off'}: server CPU "
          f"{row['server_cpu_pct']:.2f}%, {row['recorded_mib']:.1f} MiB written", flush=True)
    return {k: row[k] for k in ("window_s", "server_cpu_pct", "server_rss_mib", "recorded_mib", "other_cpu_pct")}


def cpu_part(args, source: Path, tmp: Path) -> list[dict]:
    results = []
    for cls in [SERVERS[args.only]] if args.only else SERVERS.values():
        result: dict = {"server": cls.name}
        try:
            for record in (False, True):
                with cls(record=record) as server:
                    result["version"] = server.version
                    result["on" if record else "off"] = ingest(server, args, source, tmp)
        except Exception as error:  # noqa: BLE001 - one server failing still reports the other
            traceback.print_exc()
            result["error"] = f"failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        results.append(result)
    return results


# ------------------------------------------------------------------------------------ finalize


def long_fragmented(minutes: float, source: Path) -> Path:
    """The clip looped to `minutes`, copied into fragmented MP4 as the media node writes it (made once)."""
    path = OUT / f"recording-{minutes:g}min.part.mp4"
    if path.exists() and path.stat().st_size:
        return path
    tmp = path.with_suffix(".tmp.mp4")
    subprocess.run([require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", "-1",
                    "-i", str(source), "-t", str(minutes * 60), "-c", "copy",
                    "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-frag_duration", "2000000",
                    "-f", "mp4", str(tmp)], check=True, timeout=600)
    tmp.rename(path)
    return path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of a child process."""
    cpu, started = _children_cpu(), time.monotonic()
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=600, stdout=subprocess.DEVNULL)
    return time.monotonic() - started, _children_cpu() - cpu


OURS = """\
import os, sys, time
from pathlib import Path
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "microvibe.settings")
django.setup()
from live.recordings import THUMBNAIL_AT, remux_faststart, thumbnail_write
part, out = Path(sys.argv[1]), Path(sys.argv[2])
wall, cpu = time.perf_counter(), time.process_time()
finished = remux_faststart(part, out)
thumbnail_write(out, out.with_suffix(".jpg"), finished.duration * THUMBNAIL_AT)
print(time.perf_counter() - wall, time.process_time() - cpu)
"""


def _ours(part: Path, out: Path) -> tuple[float, float]:
    """(wall s, CPU s) of the task's file work, timed inside a fresh Python once Django is set up
    (a Celery worker has done that before the task comes)."""
    done = subprocess.run([str(Path(ROOT) / ".venv/bin/python"), "-c", OURS, str(part), str(out)], check=True,
                          cwd=ROOT, timeout=600, capture_output=True, text=True)
    wall, cpu = done.stdout.split()[-2:]
    return float(wall), float(cpu)


def finalize_part(args, source: Path, tmp: Path) -> dict:
    part = long_fragmented(args.minutes, source)
    ffmpeg = require("ffmpeg")
    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "ffmpeg": []}
    for _ in range(args.runs):
        runs["ours"].append(_ours(part, tmp / "ours.mp4"))
        runs["ffmpeg"].append(_timed([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(part),
                                      "-c", "copy", "-movflags", "+faststart", str(tmp / "ffmpeg.mp4")]))
    sizes = {"part": part.stat().st_size, "ours": (tmp / "ours.mp4").stat().st_size,
             "ffmpeg": (tmp / "ffmpeg.mp4").stat().st_size}
    best = {k: min(v) for k, v in runs.items()}
    print(f"  finalize {args.minutes:g} min: ours {best['ours'][0]:.2f} s wall / {best['ours'][1]:.2f} s CPU, "
          f"ffmpeg {best['ffmpeg'][0]:.2f} s / {best['ffmpeg'][1]:.2f} s", flush=True)
    return {"minutes": args.minutes, "runs": {k: [list(r) for r in v] for k, v in runs.items()},
            "best": {k: list(v) for k, v in best.items()}, "bytes": sizes}


# ------------------------------------------------------------------------------------ report


def section(cpu: list[dict], final: dict | None, machine: dict, args) -> str:
    m = machine
    lines = [
        f"Run {m['date_utc']} at commit {m['git_commit']}: {m['nproc']} cores ({m['cpu_model']}), "
        f"Linux {m['kernel']}, Python {m['python']}, {m['nginx']} + nginx-rtmp.",
        "",
        f"**CPU while recording** (the ingest case: one 720p30 publisher, no reader; {args.warmup:g} s warm-up, "
        f"{args.seconds:g} s measured; % of one core):",
        "",
        "| server | recording off | recording on | recording cost (on - off) | written in the window MiB "
        "| RSS MiB off / on |",
        "|---|---|---|---|---|---|",
    ]
    for r in cpu:
        off, on = r.get("off"), r.get("on")
        if not off or not on:
            lines.append(f"| {r['server']} | {r.get('error', 'not run')} | | | | |")
            continue
        lines.append(f"| {r['server']} | {off['server_cpu_pct']:.2f} | {on['server_cpu_pct']:.2f} "
                     f"| {on['server_cpu_pct'] - off['server_cpu_pct']:+.2f} | {on['recorded_mib']:.1f} "
                     f"| {off['server_rss_mib']:.1f} / {on['server_rss_mib']:.1f} |")
    if final:
        ours, ffmpeg = final["best"]["ours"], final["best"]["ffmpeg"]
        lines += [
            "",
            f"**Finalize** a {final['minutes']:g}-minute recording ({final['bytes']['part'] / 2**20:.0f} MiB "
            f"fragmented MP4; best of {args.runs}):",
            "",
            "| | wall s | CPU s | output MiB |",
            "|---|---|---|---|",
            f"| MicroVibe's task (remux faststart + thumbnail, PyAV) "
            f"| {ours[0]:.2f} | {ours[1]:.2f} "
            f"| {final['bytes']['ours'] / 2**20:.1f} |",
            f"| `ffmpeg -c copy -movflags +faststart` | {ffmpeg[0]:.2f} | {ffmpeg[1]:.2f} "
            f"| {final['bytes']['ffmpeg'] / 2**20:.1f} |",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.record", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window of the CPU cases")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--readers-per-proc", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the recording to finalize")
    parser.add_argument("--runs", type=int, default=3, help="finalize runs per side")
    parser.add_argument("--only", choices=sorted(SERVERS), help="the CPU part on one server only")
    parser.add_argument("--no-finalize", action="store_true", help="skip the finalize part")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)
    source = source_flv()
    with tempfile.TemporaryDirectory(prefix="mv-bench-record-") as tmp:
        cpu = cpu_part(args, source, Path(tmp))
        final = None
        try:
            if not args.no_finalize:
                final = finalize_part(args, source, Path(tmp))
        except Exception:  # noqa: BLE001 - the CPU table still reports
            traceback.print_exc()
    nginx = next((r.get("version") for r in cpu if r["server"] == "nginx-rtmp"), None)
    machine = report.machine_info(nginx)
    text = section(cpu, final, machine, args)
    print()
    print(text)
    settings = {"seconds": args.seconds, "warmup": args.warmup, "minutes": args.minutes, "runs": args.runs}
    path = report.write_json(OUT, {"cpu": cpu, "finalize": final}, machine, settings, prefix="record-")
    print(f"\nraw numbers: {path.relative_to(ROOT)}")
    if not args.no_doc:
        report.write_doc(text, "# Benchmarks\n", start=START, end=END, heading="## Recording")
        print(f"recording section written to {report.DOC.relative_to(ROOT)}")
    return 1 if (final is None and not args.no_finalize) or any(r.get("error") for r in cpu) else 0


if __name__ == "__main__":
    raise SystemExit(main())
