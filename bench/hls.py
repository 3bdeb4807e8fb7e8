"""The HLS part of `make bench` (`python -m bench --parts hls`): startup, segmenting CPU, loop lag.

- startup: for each server, `--hls-runs` fresh streams (a new MicroVibe room, a new nginx-rtmp
  stream name); each is published with bench/publisher.py while this process polls the playlist
  over HTTP every POLL s; a run is done at the first playlist that lists a segment which can be
  fetched. Startup = the time that playlist came back - the publisher's first RTMP byte.
- CPU: the ingest-only case (publisher, no reader) on a server with HLS off, then on one with HLS
  on; the segmenting cost is the difference.
- loop lag: bench/hls_loop.py, MicroVibe's media plane in its own process with LOOP_STREAMS
  streams, HLS off then on.
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from . import report
from .microvibe import MicroVibe
from .nginx_rtmp import NginxRtmp
from .run import CASES, ROOT, run_case, start_publisher
from .source import OUT

POLL = 0.02  # s between playlist requests
RUN_TIMEOUT = 15.0  # s for a run's first playable playlist
LOOP_STREAMS = 4
START, END = "<!-- bench:hls:start -->", "<!-- bench:hls:end -->"
SERVERS = {"nginx": NginxRtmp, "microvibe": MicroVibe}


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of one GET on a fresh connection; (0, b"") when it fails."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        response = conn.getresponse()
        return response.status, response.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


def first_segment(playlist: str) -> tuple[float, str] | None:
    """(EXTINF duration, URI) of the playlist's first segment."""
    lines = [line.strip() for line in playlist.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("#EXTINF:"):
            uri = next((u for u in lines[i + 1:] if u and not u.startswith("#")), None)
            if uri:
                return float(line[8:].split(",")[0]), uri
    return None


def poll_first_segment(playlist_url: str, publisher: subprocess.Popen, row: dict) -> None:
    """Poll the playlist every POLL s until it lists a segment whose GET returns it; note when."""
    deadline = time.monotonic() + RUN_TIMEOUT
    due = time.monotonic()
    while time.monotonic() < deadline:
        row["polls"] += 1
        status, body = http_get(playlist_url)
        if status == 200 and b"#EXT-X-STREAM-INF" in body:  # MicroVibe's entry point: the player's own variant
            playlist_url = urljoin(playlist_url, body.decode().strip().splitlines()[-1])
            status, body = http_get(playlist_url)
        answered = time.monotonic()
        if status == 200 and (segment := first_segment(body.decode(errors="replace"))):
            seg_status, seg_body = http_get(urljoin(playlist_url, segment[1]))
            if seg_status == 200 and seg_body:
                row.update(playlist_at=answered, segment_at=time.monotonic(), segment_s=segment[0],
                           segment_bytes=len(seg_body))
                return
        if publisher.poll() is not None:
            return
        due += POLL
        time.sleep(max(0.0, due - time.monotonic()))


def startup_run(server, source: Path, log: Path) -> dict:
    publish_url, playlist_url = server.new_stream()
    publisher = subprocess.Popen([sys.executable, "-m", "bench.publisher", publish_url, str(source), str(log),
                                  "--seconds", str(RUN_TIMEOUT)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    row: dict = {"polls": 0}
    try:
        poll_first_segment(playlist_url, publisher, row)
    finally:
        publisher.terminate()
        out, _ = publisher.communicate(timeout=10)
    stamps = dict(field.split("=", 1) for field in out.split() if "=" in field)
    if "first_byte" not in stamps:
        return {**row, "error": f"the publisher did not start:\n{server.log()}"}
    row["first_byte"], row["media_start"] = float(stamps["first_byte"]), float(stamps["media_start"])
    row["setup_ms"] = round(1000 * (row["media_start"] - row["first_byte"]), 1)  # handshake, connect, publish
    if "playlist_at" not in row:
        return {**row, "error": f"no playable playlist in {RUN_TIMEOUT:g} s"}
    row["startup_s"] = round(row["playlist_at"] - row["first_byte"], 3)
    row["startup_with_segment_s"] = round(row["segment_at"] - row["first_byte"], 3)
    return row


def server_part(key: str, args, source: Path, tmp: Path) -> dict:
    """HLS startup runs and the ingest CPU with HLS on, then the ingest CPU with HLS off."""
    cls = SERVERS[key]
    result: dict = {"server": cls.name}
    try:
        with cls(hls=True) as server:
            result["version"] = server.version
            print(f"{server.name}: HLS startup, {args.hls_runs} runs", flush=True)
            runs = []
            for i in range(args.hls_runs):
                runs.append(startup_run(server, source, tmp / f"startup-{key}-{i}.log"))
                r = runs[-1]
                print(f"  run {i + 1}: " + (f"{r['startup_s']:.3f} s (setup {r['setup_ms']:.0f} ms, "
                                              f"first segment {r['segment_s']:g} s)" if "startup_s" in r
                                              else r["error"].splitlines()[0]), flush=True)
                time.sleep(0.5)
            result["startup_runs"] = runs
            result["ingest_hls_on"] = ingest(server, args, source, tmp, "on")
        with cls(hls=False) as server:
            result["ingest_hls_off"] = ingest(server, args, source, tmp, "off")
    except Exception as error:  # noqa: BLE001 - one server failing still reports the other
        traceback.print_exc()
        result["error"] = f"failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    return result


def ingest(server, args, source: Path, tmp: Path, hls: str) -> dict:
    log = tmp / f"ingest-{server.name}-hls-{hls}.log"
    publisher = start_publisher(server, source, log)
    try:
        time.sleep(2.0)
        row = run_case(server, publisher, log, CASES["ingest"], args, tmp)
    finally:
        publisher.terminate()
        publisher.wait(10)
    print(f"  {server.name} ingest, HLS {hls}: server CPU {row['server_cpu_pct']:.1f}%", flush=True)
    return {k: row[k] for k in ("window_s", "server_cpu_pct", "server_rss_mib", "publisher_cpu_pct",
                                "machine_cpu_pct", "other_cpu_pct")}


def loop_lag(args, source: Path, tmp: Path, hls: bool) -> dict:
    out = tmp / f"loop-{'on' if hls else 'off'}.json"
    cmd = [sys.executable, "-m", "bench.hls_loop", str(source), "--streams", str(LOOP_STREAMS),
           "--seconds", f"{args.seconds:g}", "--warmup", f"{args.warmup:g}", "--out", str(out)]
    print(f"MicroVibe in-process: event loop lag, {LOOP_STREAMS} streams, HLS {'on' if hls else 'off'}", flush=True)
    proc = subprocess.run(cmd + ([] if hls else ["--no-hls"]), cwd=ROOT, timeout=args.seconds + args.warmup + 120)
    if proc.returncode != 0 or not out.exists():
        return {"hls": hls, "error": f"bench.hls_loop exited {proc.returncode}"}
    return json.loads(out.read_text())


# ------------------------------------------------------------------------------------ report


def _startup_summary(runs: list[dict]) -> dict:
    ok = [r for r in runs if "startup_s" in r]
    values = sorted(r["startup_s"] for r in ok)
    if not values:
        return {"runs_ok": 0, "runs": len(runs)}
    return {
        "runs_ok": len(ok), "runs": len(runs),
        "startup_median_s": round(statistics.median(values), 3), "startup_min_s": values[0],
        "startup_max_s": values[-1],
        "setup_median_ms": round(statistics.median(r["setup_ms"] for r in ok), 1),
        "from_media_median_s": round(statistics.median(r["playlist_at"] - r["media_start"] for r in ok), 3),
        "with_segment_median_s": round(statistics.median(r["startup_with_segment_s"] for r in ok), 3),
        "first_segment_s": sorted({r["segment_s"] for r in ok}),
    }  # fmt: skip


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def section(servers: list[dict], loops: list[dict], machine: dict, args) -> str:
    m = machine
    lines = [
        f"Run {m['date_utc']} at commit {m['git_commit']}: {m['nproc']} cores ({m['cpu_model']}), "
        f"Linux {m['kernel']}, Python {m['python']}, {m['nginx']} + nginx-rtmp (Debian libnginx-mod-rtmp). "
        f"Source: the 720p30 clip above (2 s GOP); `hls_fragment 2s` / `HLS_FRAGMENT=2`, playlist 60 s.",
        "",
        f"**Startup** (first RTMP byte to the first playlist listing a fetchable segment; {args.hls_runs} "
        f"fresh streams per server, playlist polled every {POLL * 1000:g} ms):",
        "",
        "| server | runs ok | startup med s | min s | max s | RTMP setup med ms | first media tag to playlist, med s "
        "| with the segment fetched, med s | first segment EXTINF s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    medians = {}
    for s in servers:
        if s.get("error") and "startup_runs" not in s:
            lines.append(f"| {s['server']} | {s['error']} | | | | | | | |")
            continue
        st = s["startup"]
        if not st["runs_ok"]:
            lines.append(f"| {s['server']} | 0/{st['runs']} | | | | | | | |")
            continue
        medians[s["server"]] = st
        lines.append(
            f"| {s['server']} | {st['runs_ok']}/{st['runs']} | {st['startup_median_s']:.3f} "
            f"| {st['startup_min_s']:.3f} | {st['startup_max_s']:.3f} | {st['setup_median_ms']:.0f} "
            f"| {st['from_media_median_s']:.3f} | {st['with_segment_median_s']:.3f} "
            f"| {', '.join(f'{d:g}' for d in st['first_segment_s'])} |")
    if len(medians) == 2:
        mv, ng = medians["MicroVibe"], medians["nginx-rtmp"]
        diff = mv["startup_median_s"] - ng["startup_median_s"]
        setup = (mv["setup_median_ms"] - ng["setup_median_ms"]) / 1000
        media = mv["from_media_median_s"] - ng["from_media_median_s"]
        lines += ["", f"MicroVibe's median startup is {'no slower than' if diff <= 0 else 'slower than'} "
                      f"nginx-rtmp's ({diff:+.3f} s): RTMP setup {setup:+.3f} s, first media tag to playlist "
                      f"{media:+.3f} s."]
    lines += [
        "",
        f"**Segmenting CPU** (the ingest case, one publisher and no reader, {args.warmup:g} s warm-up, "
        f"{args.seconds:g} s measured; % of one core):",
        "",
        "| server | HLS off | HLS on | HLS cost (on - off) | RSS MiB off / on | publisher CPU % "
        "| other CPU % off / on |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in servers:
        off, on = s.get("ingest_hls_off"), s.get("ingest_hls_on")
        if not off or not on:
            lines.append(f"| {s['server']} | {s.get('error', 'not run')} | | | | | |")
            continue
        lines.append(
            f"| {s['server']} | {off['server_cpu_pct']:.1f} | {on['server_cpu_pct']:.1f} "
            f"| {on['server_cpu_pct'] - off['server_cpu_pct']:+.1f} | {off['server_rss_mib']:.1f} / "
            f"{on['server_rss_mib']:.1f} | {on['publisher_cpu_pct']:.1f} | {off['other_cpu_pct']:.1f} / "
            f"{on['other_cpu_pct']:.1f} |")
    if loops:
        lines += [
            "",
            f"**Event loop lag**, MicroVibe's media plane in-process (`bench/hls_loop.py`), {LOOP_STREAMS} "
            f"720p30 streams published, {args.seconds:g} s measured: overshoot of a 10 ms `asyncio.sleep`:",
            "",
            "| HLS | lag med / p99 / max ms | samples | process CPU % | segments written | HLS reader drops |",
            "|---|---|---|---|---|---|",
        ]
        for r in loops:
            if r.get("error"):
                lines.append(f"| {'on' if r['hls'] else 'off'} | {r['error']} | | | | |")
                continue
            lines.append(
                f"| {'on' if r['hls'] else 'off'} | {_f(r['lag_median_ms'], 2)} / {_f(r['lag_p99_ms'], 2)} / "
                f"{_f(r['lag_max_ms'], 2)} | {r['samples']} | {r['cpu_pct']:.1f} | {r['segments']} "
                f"| {r['reader_drops']} |")
    return "\n".join(lines)


def main(args, source: Path, tmp: Path) -> int:
    keys = [args.only] if args.only else list(SERVERS)
    servers = []
    for key in keys:
        result = server_part(key, args, source, tmp)
        if "startup_runs" in result:
            result["startup"] = _startup_summary(result["startup_runs"])
        servers.append(result)
    loops = []
    if "microvibe" in keys and not args.no_loop_lag:
        loops = [loop_lag(args, source, tmp, hls=False), loop_lag(args, source, tmp, hls=True)]
    nginx = next((s.get("version") for s in servers if s["server"] == "nginx-rtmp"), None)
    machine = report.machine_info(nginx)
    text = section(servers, loops, machine, args)
    print()
    print(text)
    settings = {"hls_runs": args.hls_runs, "poll_s": POLL, "seconds": args.seconds, "warmup": args.warmup,
                "loop_streams": LOOP_STREAMS, "source": source.name, "servers": keys}
    path = report.write_json(OUT, {"servers": servers, "loop_lag": loops}, machine, settings, prefix="hls-")
    print(f"\nraw numbers: {path.relative_to(ROOT)}")
    if not args.no_doc:
        report.write_doc(text, "# Benchmarks\n", start=START, end=END, heading="## HLS")
        print(f"HLS section written to {report.DOC.relative_to(ROOT)}")
    failed = any(s.get("error") for s in servers) or any(r.get("error") for r in loops)
    failed = failed or any(s.get("startup", {}).get("runs_ok") != args.hls_runs for s in servers)
    return 1 if failed else 0
