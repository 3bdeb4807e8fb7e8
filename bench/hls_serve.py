"""`python -m bench.hls_serve`: HLS players (bench/hls_players.py) against each server's HLS files.

Per server: HLS on as bench/hls.py configures it (2 s fragments, 60 s playlist), one publisher of
the bench clip (bench/publisher.py, real time); once the playlist lists LIVE_EDGE segments, a
window with no player (the baseline: ingest + segmenting), then `--players` players spread over
reader processes of `--players-per-proc`, starting over one target duration, and after the warm-up
the measured window: the server's process tree CPU (bench/procstat.py), its RSS, the players'
segment GETs (p50 / p99 / max request-to-last-byte), errors, the client and publisher processes'
CPU and the rest of the machine's (`other`). Servers:

- `microvibe`: `manage.py serve`, the media HTTP server's `/hls/{room}.m3u8` (a multivariant
  with the player's `?ctx=`, so every player is a counted viewer session), its segments.
- `nginx`: nginx-rtmp's files served by the same nginx's `http` block (bench/nginx_rtmp.py, whose
  config leaves `sendfile` at nginx's default, off: each segment read into nginx's buffers).
- `nginx-sendfile`: the same with `sendfile on;` in its `http` block (as Debian's stock nginx.conf).

nginx runs one worker (`worker_processes 1`), which does the RTMP ingest, the HLS muxing and the
HTTP serving: one process tree, one CPU figure; the serving part is that minus the baseline.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from unittest import mock
from urllib.parse import urljoin

from . import nginx_rtmp, procstat, report
from .hls import http_get
from .hls_players import LIVE_EDGE_SEGMENTS, parse_playlist
from .microvibe import MicroVibe
from .nginx_rtmp import NginxRtmp
from .run import collect, split
from .source import OUT, source_flv
from .stats import percentile

ROOT = report.ROOT
START, END = "<!-- bench:hls-serve:start -->", "<!-- bench:hls-serve:end -->"
STARTUP = 1.0  # s for the reader processes to start before the players' spread begins
SPREAD = 2.0  # s over which the players start (one target duration: every phase of a segment)
READY_TIMEOUT = 30.0  # s for the playlist to list LIVE_EDGE segments


class NginxSendfile(NginxRtmp):
    """nginx-rtmp's HLS files served with `sendfile on` (nginx's default is off)."""

    name = "nginx-rtmp, sendfile on"

    def __enter__(self) -> NginxSendfile:
        http = nginx_rtmp.HTTP.replace("    access_log off;\n", "    access_log off;\n    sendfile on;\n", 1)
        with mock.patch.object(nginx_rtmp, "HTTP", http):
            super().__enter__()
        if "sendfile on;" not in (self.prefix / "nginx.conf").read_text():
            self.__exit__()
            raise RuntimeError("bench/nginx_rtmp.py's http block changed: sendfile on could not be added")
        return self


SERVERS = {"microvibe": MicroVibe, "nginx": NginxRtmp, "nginx-sendfile": NginxSendfile}


def wait_ready(playlist_url: str, publisher: subprocess.Popen) -> str:
    """The media playlist's URL once it lists LIVE_EDGE segments (one player id for MicroVibe)."""
    deadline = time.monotonic() + READY_TIMEOUT
    url = playlist_url
    while time.monotonic() < deadline and publisher.poll() is None:
        status, body = http_get(url, timeout=5)
        pl = parse_playlist(body.decode(errors="replace")) if status == 200 else None
        if pl is not None and pl.variant:
            url = urljoin(url, pl.variant)
            continue
        if pl is not None and len(pl.segments) >= LIVE_EDGE_SEGMENTS:
            return url
        time.sleep(0.25)
    raise RuntimeError(f"no playlist with {LIVE_EDGE_SEGMENTS} segments at {playlist_url} in {READY_TIMEOUT:g} s")


def measure(server, publisher: subprocess.Popen, clients: list[subprocess.Popen], t0: float, t1: float) -> dict:
    """CPU (% of one core) of the server tree, publisher, each client, the machine over [t0, t1]."""
    usage, machine_pct = procstat.measure(procstat.server_meters(server.root_pid, publisher.pid, clients), t0, t1)
    return {
        "server_cpu_pct": round(usage["server"].cpu_pct, 2), "server_rss_mib": round(usage["server"].rss_mib_max, 1),
        "publisher_cpu_pct": round(usage["publisher"].cpu_pct, 2),
        "client_cpu_pct": [round(u.cpu_pct, 1) for name, u in usage.items() if name.startswith("client")],
        "machine_cpu_pct": round(machine_pct, 1),
        "other_cpu_pct": round(max(0.0, machine_pct - sum(u.cpu_pct for u in usage.values())), 1),
    }  # fmt: skip


def run_players(server, publisher: subprocess.Popen, url: str, args, tmp: Path, key: str) -> tuple[dict, list]:
    t0 = time.monotonic() + STARTUP + SPREAD + args.warmup
    t1 = t0 + args.seconds
    shares = split(args.players, max(1, -(-args.players // args.players_per_proc)))
    procs, outs = [], []
    for i, (first, count) in enumerate(shares):
        outs.append(tmp / f"players-{key}-{i}.json")
        cmd = [sys.executable, "-m", "bench.hls_players", url, "--count", str(count), "--first-index", str(first),
               "--total", str(args.players), "--spread", f"{SPREAD:g}", "--t0", f"{t0:.6f}", "--t1", f"{t1:.6f}",
               "--out", str(outs[-1])]
        procs.append(subprocess.Popen(cmd, cwd=ROOT))
    usage = measure(server, publisher, procs, t0, t1)
    players = collect(procs, outs, shares, lambda k, code: {"index": k, "window": {
        "segments": 0, "bytes": 0, "playlist_fetches": 0, "fetch_times": [],
        "errors": [f"reader process exited {code}"]}})
    return {**usage, "window_s": round(t1 - t0, 3)}, players


def summarize(players: list[dict], window_s: float) -> dict:
    times = sorted(t for p in players for t in p["window"]["fetch_times"])
    per_player = [p["window"]["segments"] for p in players]
    errors = [e for p in players for e in p["window"]["errors"]]
    kinds: dict[str, int] = {}
    for error in errors:
        kinds[error] = kinds.get(error, 0) + 1
    seconds = [round(1000 * percentile(times, q), 1) if times else None for q in (50, 99)]
    return {
        "players": len(players),
        "players_ok": sum(1 for p in players if p["window"]["segments"] and not p["window"]["errors"]),
        "segments": len(times), "bytes": sum(p["window"]["bytes"] for p in players),
        "mbit_s": round(8 * sum(p["window"]["bytes"] for p in players) / window_s / 1e6, 1),
        "segments_per_player_min": min(per_player, default=0),
        "segments_per_player_max": max(per_player, default=0),
        "playlist_fetches": sum(p["window"]["playlist_fetches"] for p in players),
        "fetch_p50_ms": seconds[0], "fetch_p99_ms": seconds[1],
        "fetch_max_ms": round(1000 * times[-1], 1) if times else None,
        "fetch_mean_ms": round(1000 * statistics.fmean(times), 1) if times else None,
        "errors": len(errors), "error_kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:5]),
    }  # fmt: skip


def serving_notes(server) -> dict:
    """How MicroVibe served (its event loop and file path, from its log); nginx's sendfile."""
    if isinstance(server, MicroVibe):
        text = server.service.log()
        loop = re.search(r"media plane up on (\w+)", text)
        files = re.search(r"\(files by ([^)]*)\)", text)
        return {"loop": loop[1] if loop else "asyncio", "files": files[1] if files else "?"}
    return {"sendfile": "on" if isinstance(server, NginxSendfile) else "off (nginx's default)"}


def server_run(key: str, args, source: Path, tmp: Path) -> dict:
    cls = SERVERS[key]
    result: dict = {"key": key, "server": cls.name}
    try:
        with cls(hls=True) as server:
            result["version"] = server.version
            publish_url, playlist_url = server.new_stream()
            log = tmp / f"publisher-{key}.log"
            publisher = subprocess.Popen([sys.executable, "-m", "bench.publisher", publish_url, str(source), str(log)],
                                         cwd=ROOT, stdout=subprocess.PIPE, text=True)
            try:
                if "publishing" not in (publisher.stdout.readline() if publisher.stdout else ""):
                    raise RuntimeError(f"the publisher did not start:\n{server.log()}")
                url = wait_ready(playlist_url, publisher)
                print(f"{server.name}: live at {url}", flush=True)
                if args.baseline:
                    t0 = time.monotonic() + 0.5
                    result["baseline"] = measure(server, publisher, [], t0, t0 + args.baseline)
                    print(f"  no player: server CPU {result['baseline']['server_cpu_pct']:.1f}%", flush=True)
                usage, players = run_players(server, publisher, playlist_url, args, tmp, key)
                if publisher.poll() is not None:
                    raise RuntimeError(f"the publisher exited:\n{server.log()}")
            finally:
                publisher.terminate()
                publisher.wait(10)
            result.update(usage, **summarize(players, usage["window_s"]), notes=serving_notes(server))
            print(f"  {args.players} players: server CPU {result['server_cpu_pct']:.1f}%, {result['players_ok']} ok, "
                  f"fetch p99 {result['fetch_p99_ms']} ms, {result['errors']} errors", flush=True)
    except Exception as error:  # noqa: BLE001 - one server failing still reports the others
        traceback.print_exc()
        result["error"] = f"failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    return result


# ------------------------------------------------------------------------------------ report


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[dict]) -> str:
    lines = [
        "| server | players ok | server CPU % | serving CPU % (- no-player baseline) | RSS MiB | segments fetched "
        "| Mbit/s served | segment fetch p50 / p99 / max ms | errors | client CPU % (max proc / procs) "
        "| publisher CPU % | other CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.get("error"):
            lines.append(f"| {r['server']} | {r['error']} | | | | | | | | | | |")
            continue
        base = r.get("baseline")
        serving = "-"
        if base:
            serving = f"{r['server_cpu_pct'] - base['server_cpu_pct']:.1f} (- {base['server_cpu_pct']:.1f})"
        clients = r["client_cpu_pct"]
        lines.append(
            f"| {r['server']} | {r['players_ok']}/{r['players']} | {_f(r['server_cpu_pct'])} | {serving} "
            f"| {_f(r['server_rss_mib'])} | {r['segments']} ({r['segments_per_player_min']}-"
            f"{r['segments_per_player_max']} per player) | {_f(r['mbit_s'])} "
            f"| {_f(r['fetch_p50_ms'])} / {_f(r['fetch_p99_ms'])} / {_f(r['fetch_max_ms'])} | {r['errors']} "
            f"| {_f(max(clients, default=None))} / {len(clients)} | {_f(r['publisher_cpu_pct'])} "
            f"| {_f(r['other_cpu_pct'])} |")
    return "\n".join(lines)


def section(results: list[dict], machine: dict, args) -> str:
    m = machine
    lines = [
        f"Run {m['date_utc']} at commit {m['git_commit']}: {m['nproc']} cores ({m['cpu_model']}), Linux {m['kernel']}, "
        f"Python {m['python']}, {m['nginx']} + nginx-rtmp. One publisher of the 720p30 clip, HLS 2 s fragments / 60 s "
        f"playlist; {args.players} players in {-(-args.players // args.players_per_proc)} processes, started over "
        f"{SPREAD:g} s, {args.warmup:g} s warm-up, {args.seconds:g} s measured (the no-player baseline: "
        f"{args.baseline:g} s).",
        "",
        table(results),
    ]
    notes = []
    for r in results:
        n = r.get("notes", {})
        if "loop" in n:
            notes.append(f"MicroVibe on {n['loop']}, files by {n['files']}")
        elif "sendfile" in n and "sendfile" not in r["server"]:
            notes.append(f"{r['server']}: sendfile {n['sendfile']}")
        if r.get("error_kinds"):
            notes.append(f"{r['server']} errors: " + "; ".join(f"{k} (x{v})" for k, v in r["error_kinds"].items()))
    if notes:
        lines += ["", ". ".join(notes) + "."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.hls_serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--players", type=int, default=200)
    parser.add_argument("--players-per-proc", type=int, default=50, help="players per reader process")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=6.0, help="s after the last player started")
    parser.add_argument("--baseline", type=float, default=10.0, help="no-player window, s (0: none)")
    parser.add_argument("--only", default=",".join(SERVERS), help=f"comma-separated, of: {', '.join(SERVERS)}")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)
    unknown = [k for k in args.only.split(",") if k not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(SERVERS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = source_flv()
    with tempfile.TemporaryDirectory(prefix="mv-bench-hls-serve-") as tmp:
        results = [server_run(key, args, source, Path(tmp)) for key in args.only.split(",")]
    nginx = next((r.get("version") for r in results if r["key"].startswith("nginx") and r.get("version")), None)
    machine = report.machine_info(nginx)
    text = section(results, machine, args)
    print()
    print(text)
    settings = {"players": args.players, "players_per_proc": args.players_per_proc, "seconds": args.seconds,
                "warmup": args.warmup, "baseline": args.baseline, "spread": SPREAD, "servers": args.only.split(","),
                "source": source.name}
    path = report.write_json(OUT, results, machine, settings, prefix="hls-serve-")
    print(f"\nraw numbers: {path.relative_to(ROOT)}")
    if not args.no_doc:
        report.write_doc(text, "# Benchmarks\n", start=START, end=END, heading="## HLS serving")
        print(f"HLS serving section written to {report.DOC.relative_to(ROOT)}")
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
