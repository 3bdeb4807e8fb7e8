"""`make bench`: each case on each server, same publisher and readers, one table.

A case is a number of viewers of one kind (see CASES); to add one, add a reader kind in readers.py
(or a case runner here) and an entry in CASES. `--parts` picks the fan-out cases (here) and/or the
HLS measurements (hls.py: startup, segmenting CPU, event loop lag).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import procstat, report
from .microvibe import MicroVibe
from .nginx_rtmp import NginxRtmp
from .source import OUT, source_flv
from .stats import load_sends, summarize

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # a reader kind: readers.KINDS
    readers: int
    join_over: float = 0.0  # s over which the readers join, evenly (0: all at once)
    # a floor on the measured window: a small figure needs a long one (CPU time is counted in 10 ms
    # ticks, one tick over 15 s is 0.07 % of a core, and the ingest target is 0.6 %)
    min_seconds: float = 0.0


CASES = {c.name: c for c in (
    Case("rtmp-1", "rtmp", 1),
    Case("rtmp-10", "rtmp", 10),
    Case("rtmp-50", "rtmp", 50),
    Case("rtmp-100", "rtmp", 100),
    Case("rtmp-300", "rtmp", 300),
    Case("flv-50", "flv", 50),
    Case("flv-100", "flv", 100),
    # joining over 20 s (10 GOPs): viewers that start at different keyframes
    Case("flv-100-spread", "flv", 100, join_over=20.0),
    Case("flv-300", "flv", 300),
    Case("ingest", "rtmp", 0, min_seconds=60.0),  # publisher only: the per-stream cost under the per-viewer one
)}  # fmt: skip
DEFAULT_CASES = ["ingest", "rtmp-1", "rtmp-10", "rtmp-50", "rtmp-100", "rtmp-300", "flv-50", "flv-100",
                 "flv-100-spread", "flv-300"]
SERVERS = {"nginx": NginxRtmp, "microvibe": MicroVibe}
PARTS = ("fanout", "hls")
STARTUP = 1.0  # s for reader processes to start and connect before the warm-up counts


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """(first index, count) of each client process's readers, as even as possible."""
    return [(i * total // parts, (i + 1) * total // parts - i * total // parts) for i in range(parts)]


def start_publisher(server, source: Path, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(_python("bench.publisher", server.publish_url, str(source), str(log)),
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if "publishing" not in line:
        proc.kill()
        raise RuntimeError(f"{server.name}: the publisher did not start:\n{server.log()}")
    return proc


def measure_window(server, publisher: subprocess.Popen, procs: list[subprocess.Popen], outs: list[Path],
                   shares: list[tuple[int, int]], t0: float, t1: float) -> tuple[dict, float, list[dict]]:
    """CPU of the server, publisher and client processes over [t0, t1], then the clients' readers
    (a crashed client process: its readers count as failed, the run goes on)."""
    usage, machine_pct = procstat.measure(procstat.server_meters(server.root_pid, publisher.pid, procs), t0, t1)
    readers = collect(procs, outs, shares, lambda k, code: {
        "index": k, "error": f"client process exited {code}", "connected_at": None, "first_frame_at": None,
        "frames_total": 0, "bytes_total": 0, "frames": []})
    return usage, machine_pct, readers


def collect(procs: list[subprocess.Popen], outs: list[Path], shares: list[tuple[int, int]],
            failed: Callable[[int, int], dict]) -> list[dict]:
    """The rows each client process wrote; a process that crashed gives failed(index, exit code) for
    each of its clients."""
    rows = []
    for proc, out, (first, count) in zip(procs, outs, shares, strict=True):
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        rows += json.loads(out.read_text()) if out.exists() else [failed(k, code) for k in range(first, first + count)]
    return rows


def run_case(server, publisher: subprocess.Popen, pub_log: Path, case: Case, args, tmp: Path) -> dict:
    row = {"case": case.name, "kind": case.kind, "server": server.name}
    url = server.play_url(case.kind)
    if url is None:
        reason = getattr(server, "unsupported", {}).get(case.kind, f"n/a: no {case.kind} on this server")
        return {**row, "skipped": reason}
    if publisher.poll() is not None:
        raise RuntimeError(f"{server.name}: the publisher exited:\n{server.log()}")
    t0 = time.monotonic() + STARTUP + case.join_over + args.warmup
    t1 = t0 + max(args.seconds, case.min_seconds)
    procs, outs = [], []
    shares = split(case.readers, math.ceil(case.readers / args.readers_per_proc))  # none for ingest
    for i, (first, count) in enumerate(shares):
        outs.append(tmp / f"{server.name}-{case.name}-{i}.json")
        cmd = _python("bench.readers", case.kind, url, "--count", str(count), "--first-index", str(first),
                      "--t0", f"{t0:.6f}", "--t1", f"{t1:.6f}", "--out", str(outs[-1]),
                      "--join-step", f"{case.join_over / max(1, case.readers):.6f}")
        procs.append(subprocess.Popen(cmd, cwd=ROOT))
    usage, machine_pct, readers = measure_window(server, publisher, procs, outs, shares, t0, t1)
    time.sleep(1.0)  # the publisher flushes its send log every 0.5 s
    summary = summarize(readers, load_sends(pub_log), t0, t1)
    print(f"  {server.name} {case.name}: server CPU {usage['server'].cpu_pct:.1f}%, fps min {summary['fps_min']}, "
          f"lag p99 {summary['lag_p99_ms'] or 0:.0f} ms, {summary['readers_behind']} behind", flush=True)
    return {
        **row, "readers_requested": case.readers, "window_s": round(t1 - t0, 3),
        "server_cpu_pct": round(usage["server"].cpu_pct, 2),
        "server_rss_mib": round(usage["server"].rss_mib_max, 1),
        "server_rss_mib_end": round(usage["server"].rss_mib_end, 1),
        "publisher_cpu_pct": round(usage["publisher"].cpu_pct, 2),
        "client_cpu_pct": [round(u.cpu_pct, 1) for name, u in usage.items() if name.startswith("client")],
        "machine_cpu_pct": round(machine_pct, 1),
        # what ran besides the server, the readers and the publisher (other jobs, the orchestrator)
        "other_cpu_pct": round(max(0.0, machine_pct - sum(u.cpu_pct for u in usage.values())), 1),
        **summary,
    }  # fmt: skip


def run_server(name: str, cases: list[Case], args, source: Path, tmp: Path) -> tuple[list[dict], str]:
    with SERVERS[name](hls=args.hls) as server:
        print(f"{server.name} ({server.version}): publishing", flush=True)
        pub_log = tmp / f"publisher-{name}.log"
        publisher = start_publisher(server, source, pub_log)
        try:
            time.sleep(2.0)  # a first GOP through the server before anyone plays
            rows = []
            for case in cases:
                rows.append(run_case(server, publisher, pub_log, case, args, tmp))
                time.sleep(1.0)  # the previous readers' connections close
        finally:
            publisher.terminate()
            publisher.wait(10)
        return rows, server.version


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="MicroVibe vs nginx-rtmp fan-out benchmark")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help=f"comma-separated, of: {', '.join(CASES)} (default: all)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per case")
    parser.add_argument("--warmup", type=float, default=5.0, help="warm-up per case, after the readers start")
    parser.add_argument("--only", choices=sorted(SERVERS), help="run one server only")
    parser.add_argument("--readers-per-proc", type=int, default=50, help="readers per client process")
    parser.add_argument("--hls", action="store_true", help="HLS muxing on in both servers (default: off in both)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="comma-separated, of: fanout (the cases above), hls (HLS startup, segmenting CPU, "
                             "event loop lag; bench/hls.py)")
    parser.add_argument("--hls-runs", type=int, default=5, help="HLS startup: fresh streams per server")
    parser.add_argument("--no-loop-lag", action="store_true", help="HLS: skip the in-process event loop lag probe")
    args = parser.parse_args(argv)
    bad = [p for p in args.parts.split(",") if p not in PARTS]
    if bad:
        parser.error(f"unknown part(s) {', '.join(bad)}; known: {', '.join(PARTS)}")
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = args.parts.split(",")
    code = 0
    if "fanout" in parts:
        code |= fanout(args)
    if "hls" in parts:
        from . import hls

        with tempfile.TemporaryDirectory(prefix="mv-bench-hls-") as tmp:
            code |= hls.main(args, source_flv(), Path(tmp))
    return code


def fanout(args: argparse.Namespace) -> int:
    cases = [CASES[c] for c in args.cases.split(",")]
    servers = [args.only] if args.only else list(SERVERS)
    source = source_flv()
    settings = {"seconds": args.seconds, "ingest_seconds": max(args.seconds, CASES["ingest"].min_seconds),
                "warmup": args.warmup, "readers_per_proc": args.readers_per_proc,
                "hls": args.hls,
                "cases": [c.name for c in cases], "servers": servers, "source": source.name}
    results: list[dict] = []
    nginx_version = None
    with tempfile.TemporaryDirectory(prefix="mv-bench-") as tmp:
        for name in servers:
            try:
                rows, version = run_server(name, cases, args, source, Path(tmp))
            except Exception as error:  # noqa: BLE001 - one server failing still reports the other
                traceback.print_exc()
                reason = f"failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
                rows, version = [{"case": c.name, "kind": c.kind, "server": SERVERS[name].name, "skipped": reason}
                                 for c in cases], None
            results += rows
            nginx_version = version if name == "nginx" else nginx_version
    # one row per case and server, cases together so the ratio sits under its reference
    results.sort(key=lambda r: ([c.name for c in cases].index(r["case"]), servers.index(_key(r["server"]))))
    machine = report.machine_info(nginx_version)
    section = report.latest_section(results, machine, settings)
    print()
    print(section)
    path = report.write_json(OUT, results, machine, settings)
    print(f"\nraw numbers: {path.relative_to(ROOT)}")
    if not args.no_doc:
        report.write_doc(section, "# Benchmarks\n")
        print(f"table written to {report.DOC.relative_to(ROOT)}")
    return 1 if any(r.get("skipped", "").startswith("failed") for r in results) else 0


def _key(server_name: str) -> str:
    return next(k for k, cls in SERVERS.items() if cls.name == server_name)
