"""`python -m bench.llhls`: the CPU of Low-Latency HLS for one 720p30 stream, next to MPEG-TS HLS.

Two MicroVibe servers (`manage.py serve`, the same code), one after the other, both with MPEG-TS HLS
on as bench/hls_serve.py configures it (2 s fragments, 60 s playlist); the second also with
`LLHLS_ENABLED=1` (media/hls/ll_from_hub.py: CMAF parts of at most `LLHLS_PART` 0.2 s, segments
cut on the first keyframe after `LLHLS_SEGMENT` 1 s). Each gets a fresh room and one real-time
publisher (bench/publisher.py) of a 720p30 H.264 + AAC clip with a 1 s GOP (the bench clip of
bench/source.py, encoded with `-g 30` instead of 60, so an LL segment is 1 s, not 2). Cases, each a
window of `--seconds` measured after a warm-up:

- `hls-mux` (LL off, no player): the server tree's CPU; ingest + MPEG-TS segmenting.
- `hls-100` (LL off): `--players` MPEG-TS players (bench/hls_players.py, as bench/hls_serve.py
  runs them) polling the media playlist every target duration and fetching each segment.
- `llhls-mux` (LL on, no player): ingest + MPEG-TS + LL muxing; LL's cost is the difference.
- `llhls-100` (LL on): `--players` LL players (`ll_player` below) in processes of
  `--players-per-proc`, each like hls.js in lowLatencyMode on one keep-alive HTTP/1.1 connection:
  the multivariant `ll.m3u8` once (its variant is `ll.m3u8?ctx=ID`: a viewer session), the media
  playlist, the init section once, then in a loop the blocking reload of the preload-hint part
  (`&_HLS_msn=M&_HLS_part=P`) and a GET of every part the answer lists that it has not fetched
  (starting PART_HOLD_BACK parts behind the live edge). Part bodies are counted and dropped.

Figures: server CPU (procstat, % of one core, the whole process tree), RSS, media GETs a second
(parts or segments received, whole and 200), playlist GETs a second, Mbit/s, media fetch times
(LL: from the blocking reload's answer, i.e. the part's being listed, to the part's last byte;
MPEG-TS: a segment's request to its last byte), errors (non-200 or failed requests), the client,
publisher and other CPU. `python -m bench.llhls client ...` is the player process this runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

from . import hls_serve, report
from .hls import http_get
from .hls_players import Connection, HttpError, _sleep, run_players
from .microvibe import MicroVibe
from .run import collect, split
from .source import OUT, source_flv
from .stats import percentile

ROOT = report.ROOT
START, END = "<!-- bench:llhls:start -->", "<!-- bench:llhls:end -->"
GOP = 30  # frames: 1 s at 30 fps, so LL-HLS segments (cut on keyframes after LLHLS_SEGMENT=1 s) are 1 s
STARTUP = 1.0  # s for the player processes to start before the players' spread begins
SPREAD = 2.0  # s over which the players start
READY_TIMEOUT = 30.0  # s for the LL playlist to list a whole segment
PART_HOLD_BACK = 3  # parts behind the live edge a player starts at (PART-HOLD-BACK is 3 part targets)
_URI = re.compile(r'URI="([^"]+)"')
_PART = re.compile(r"part(\d+)\.(\d+)\.m4s(?:\?ctx=[0-9a-f]+)?")  # a player id: its bytes counted


# ------------------------------------------------------------------------------ the LL player


@dataclass
class LlPlaylist:
    parts: list[tuple[int, int, str]] = field(default_factory=list)  # (msn, part, uri)
    hint: tuple[int, int] | None = None  # the preload hint's (msn, part)
    init: str | None = None
    variant: str | None = None  # a multivariant playlist's first variant URI
    ended: bool = False


def parse_ll(text: str) -> LlPlaylist:
    pl, variant_next = LlPlaylist(), False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if variant_next and not line.startswith("#"):
            pl.variant = pl.variant or line
            variant_next = False
        elif line.startswith("#EXT-X-PART:") and (uri := _URI.search(line)):
            if part := _PART.fullmatch(uri[1]):
                pl.parts.append((int(part[1]), int(part[2]), uri[1]))
        elif line.startswith("#EXT-X-PRELOAD-HINT:") and (uri := _URI.search(line)):
            if part := _PART.fullmatch(uri[1]):
                pl.hint = (int(part[1]), int(part[2]))
        elif line.startswith("#EXT-X-MAP:") and (uri := _URI.search(line)):
            pl.init = uri[1]
        elif line.startswith("#EXT-X-STREAM-INF"):
            variant_next = True
        elif line.startswith("#EXT-X-ENDLIST"):
            pl.ended = True
    return pl


@dataclass
class LlStats:
    parts: int = 0  # parts received (200, whole body)
    bytes: int = 0  # part body bytes
    part_times: list[float] = field(default_factory=list)  # s: the reload's answer -> the awaited part's last byte
    reload_waits: list[float] = field(default_factory=list)  # s: a blocking reload's request -> its answer
    playlist_fetches: int = 0  # playlist GETs answered (any status)
    errors: list[str] = field(default_factory=list)


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


async def ll_player(entry_url: str, stop: asyncio.Event, stats: LlStats) -> None:
    """Play the LL stream until `stop` (or ENDLIST); see the module doc."""
    conn, url, media = Connection(), entry_url, False
    init_done, last, want = False, None, None
    try:
        while not stop.is_set():
            target = url if want is None else _with_query(url, f"_HLS_msn={want[0]}&_HLS_part={want[1]}")
            asked = time.monotonic()
            try:
                status, _, body, _ = await conn.get(target, keep_body=True)
            except HttpError as error:
                stats.errors.append(f"playlist: {error}")
                want = None
                await _sleep(stop, 1.0)
                continue
            answered = time.monotonic()
            stats.playlist_fetches += 1
            if status != 200:
                stats.errors.append(f"playlist: HTTP {status}")
                want = None  # a 503 (blocked past 3 target durations) or worse: reload without blocking
                await _sleep(stop, 0.2 if status == 503 else 1.0)
                continue
            pl = parse_ll(body.decode("utf-8", "replace"))
            if not media:
                if pl.variant is not None:
                    url = urljoin(url, pl.variant)
                media = True
                continue
            if want is not None:
                stats.reload_waits.append(answered - asked)
            if not init_done and pl.init:
                await _get(conn, urljoin(url, pl.init), stats, "init", None, None)
                init_done = True
            new = [p for p in pl.parts if last is None or p[:2] > last]
            if last is None:
                new = new[-PART_HOLD_BACK:]
            for msn, n, uri in new:
                if stop.is_set():
                    return
                timed = answered if want == (msn, n) else None
                await _get(conn, urljoin(url, uri), stats, "part", timed, (msn, n))
                last = (msn, n)
            if pl.ended:
                return
            want = pl.hint
    finally:
        conn.close()


async def _get(conn: Connection, url: str, stats: LlStats, kind: str, since: float | None, part) -> None:
    try:
        status, _, _, size = await conn.get(url, keep_body=False)
    except HttpError as error:
        stats.errors.append(f"{kind}: {error}")
        return
    if status != 200:
        stats.errors.append(f"{kind}: HTTP {status}")
        return
    if part is not None:
        stats.parts += 1
        stats.bytes += size
        if since is not None:
            stats.part_times.append(time.monotonic() - since)


def _mark(s: LlStats) -> dict:
    return {"parts": s.parts, "bytes": s.bytes, "times": len(s.part_times), "waits": len(s.reload_waits),
            "playlist_fetches": s.playlist_fetches, "errors": len(s.errors)}


def _window(s: LlStats, a: dict, b: dict) -> dict:
    return {"parts": b["parts"] - a["parts"], "bytes": b["bytes"] - a["bytes"],
            "playlist_fetches": b["playlist_fetches"] - a["playlist_fetches"],
            "part_times": s.part_times[a["times"]:b["times"]], "reload_waits": s.reload_waits[a["waits"]:b["waits"]],
            "errors": s.errors[a["errors"]:b["errors"]]}


async def client_run(url: str, count: int, first: int, total: int, spread: float, t0: float, t1: float) -> list:
    ran = await run_players(lambda s, stop: ll_player(url, stop, s), [LlStats() for _ in range(count)], _mark,
                            first, total, spread, t0, t1)
    return [{"index": first + k, "window": _window(s, a, b), "total_errors": s.errors[:20]}
            for k, (s, a, b) in enumerate(ran)]


def client_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llhls client")
    parser.add_argument("url", help="the stream's ll.m3u8 (multivariant or media)")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--total", type=int, default=0)
    parser.add_argument("--spread", type=float, default=SPREAD)
    parser.add_argument("--t0", type=float, required=True)
    parser.add_argument("--t1", type=float, required=True)
    parser.add_argument("--out", required=True)
    a = parser.parse_args(argv)
    rows = asyncio.run(client_run(a.url, a.count, a.first_index, a.total or a.count, a.spread, a.t0, a.t1))
    Path(a.out).write_text(json.dumps(rows))
    return 0


# ------------------------------------------------------------------------------ the orchestrator


def ll_url(playlist_url: str) -> str:
    """`/hls/{room}.m3u8` -> `/hls/{room}/ll.m3u8`."""
    return playlist_url.removesuffix(".m3u8") + "/ll.m3u8"


def wait_ll_ready(url: str, publisher: subprocess.Popen) -> None:
    """Until the LL media playlist lists a whole segment's parts and more."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and publisher.poll() is None:
        status, body = http_get(url, timeout=5)
        pl = parse_ll(body.decode(errors="replace")) if status == 200 else None
        if pl is not None and pl.variant:
            url = urljoin(url, pl.variant)
            continue
        if pl is not None and len({p[0] for p in pl.parts}) >= 2:
            return
        time.sleep(0.25)
    raise RuntimeError(f"no LL playlist with a whole segment at {url} in {READY_TIMEOUT:g} s")


def run_ll_players(server, publisher: subprocess.Popen, url: str, args, tmp: Path) -> tuple[dict, list]:
    t0 = time.monotonic() + STARTUP + SPREAD + args.warmup
    t1 = t0 + args.seconds
    shares = split(args.players, max(1, -(-args.players // args.players_per_proc)))
    procs, outs = [], []
    for i, (first, count) in enumerate(shares):
        outs.append(tmp / f"ll-players-{i}.json")
        cmd = [sys.executable, "-m", "bench.llhls", "client", url, "--count", str(count), "--first-index", str(first),
               "--total", str(args.players), "--spread", f"{SPREAD:g}", "--t0", f"{t0:.6f}", "--t1", f"{t1:.6f}",
               "--out", str(outs[-1])]
        procs.append(subprocess.Popen(cmd, cwd=ROOT))
    usage = hls_serve.measure(server, publisher, procs, t0, t1)
    players = collect(procs, outs, shares, lambda k, code: {"index": k, "window": {
        "parts": 0, "bytes": 0, "playlist_fetches": 0, "part_times": [], "reload_waits": [],
        "errors": [f"player process exited {code}"]}})
    return {**usage, "window_s": round(t1 - t0, 3)}, players


def _ms(values: list[float], q: float) -> float | None:
    v = percentile(values, q)
    return None if v is None else round(1000 * v, 1)


def _kinds(errors: list[str]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for error in errors:
        kinds[error] = kinds.get(error, 0) + 1
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:5])


def summarize_ll(players: list[dict], window_s: float) -> dict:
    times = sorted(t for p in players for t in p["window"]["part_times"])
    waits = sorted(t for p in players for t in p["window"]["reload_waits"])
    per_player = [p["window"]["parts"] for p in players]
    errors = [e for p in players for e in p["window"]["errors"]]
    parts = sum(per_player)
    return {
        "players": len(players),
        "players_ok": sum(1 for p in players if p["window"]["parts"] and not p["window"]["errors"]),
        "media_gets": parts, "media_per_s": round(parts / window_s, 1),
        "media_per_player_min": min(per_player, default=0), "media_per_player_max": max(per_player, default=0),
        "mbit_s": round(8 * sum(p["window"]["bytes"] for p in players) / window_s / 1e6, 1),
        "playlist_fetches": sum(p["window"]["playlist_fetches"] for p in players),
        "playlist_per_s": round(sum(p["window"]["playlist_fetches"] for p in players) / window_s, 1),
        "fetch_p50_ms": _ms(times, 50), "fetch_p99_ms": _ms(times, 99),
        "fetch_max_ms": round(1000 * times[-1], 1) if times else None,
        "fetch_mean_ms": round(1000 * statistics.fmean(times), 2) if times else None,
        "timed_parts": len(times),
        "reload_wait_p50_ms": _ms(waits, 50), "reload_wait_p99_ms": _ms(waits, 99),
        "errors": len(errors), "error_kinds": _kinds(errors),
    }  # fmt: skip


def summarize_ts(players: list[dict], window_s: float) -> dict:
    s = hls_serve.summarize(players, window_s)
    return {**s, "media_gets": s["segments"], "media_per_s": round(s["segments"] / window_s, 1),
            "media_per_player_min": s["segments_per_player_min"], "media_per_player_max": s["segments_per_player_max"],
            "playlist_per_s": round(s["playlist_fetches"] / window_s, 1)}


def ll_notes(server) -> dict:
    text = server.service.log()
    part = re.search(r"PART-TARGET ([\d.]+) s \((\d+) frames", text)
    stopped = re.findall(r"llhls \S+: (stopped: .*|audio started after.*)", text)
    return {"part_target": part[1] if part else None, "part_frames": part[2] if part else None,
            "llhls_problems": stopped[:3]}


def server_run(ll: bool, args, source: Path, tmp: Path) -> list[dict]:
    """The mux case and the players' case on one server (LL on or off)."""
    mux_case, players_case = ("llhls-mux", f"llhls-{args.players}") if ll else ("hls-mux", f"hls-{args.players}")
    rows: list[dict] = []
    try:
        server = MicroVibe(hls=True)
        server.service.env["LLHLS_ENABLED"] = "1" if ll else "0"
        with server:
            publish_url, playlist_url = server.new_stream()
            log = tmp / f"publisher-{mux_case}.log"
            publisher = subprocess.Popen([sys.executable, "-m", "bench.publisher", publish_url, str(source), str(log)],
                                         cwd=ROOT, stdout=subprocess.PIPE, text=True)
            try:
                if "publishing" not in (publisher.stdout.readline() if publisher.stdout else ""):
                    raise RuntimeError(f"the publisher did not start:\n{server.log()}")
                hls_serve.wait_ready(playlist_url, publisher)
                if ll:
                    wait_ll_ready(ll_url(playlist_url), publisher)
                print(f"LLHLS_ENABLED={int(ll)}: live at {playlist_url}", flush=True)
                t0 = time.monotonic() + args.mux_warmup
                usage = hls_serve.measure(server, publisher, [], t0, t0 + args.seconds)
                rows.append({"case": mux_case, "llhls": ll, "players": 0, **usage, "window_s": args.seconds})
                print(f"  {mux_case}: server CPU {usage['server_cpu_pct']:.2f}%", flush=True)
                if ll:
                    usage, players = run_ll_players(server, publisher, ll_url(playlist_url), args, tmp)
                    summary = summarize_ll(players, usage["window_s"])
                else:
                    ns = argparse.Namespace(players=args.players, players_per_proc=args.players_per_proc,
                                            warmup=args.warmup, seconds=args.seconds)
                    usage, players = hls_serve.run_players(server, publisher, playlist_url, ns, tmp, players_case)
                    summary = summarize_ts(players, usage["window_s"])
                if publisher.poll() is not None:
                    raise RuntimeError(f"the publisher exited:\n{server.log()}")
            finally:
                publisher.terminate()
                publisher.wait(10)
            rows.append({"case": players_case, "llhls": ll, **usage, **summary})
            notes = ll_notes(server) if ll else {}
            for row in rows:
                row["notes"] = notes
            r = rows[-1]
            print(f"  {players_case}: server CPU {r['server_cpu_pct']:.2f}%, {r['players_ok']}/{r['players']} ok, "
                  f"{r['media_per_s']} media GETs/s, p99 {r['fetch_p99_ms']} ms, {r['errors']} errors", flush=True)
    except Exception as error:  # noqa: BLE001 - one server failing still reports the other
        traceback.print_exc()
        message = f"failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        done = {r["case"] for r in rows}
        rows += [{"case": c, "llhls": ll, "error": message} for c in (mux_case, players_case) if c not in done]
    return rows


# ------------------------------------------------------------------------------------ report


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row(results: list[dict], case: str) -> dict | None:
    return next((r for r in results if r["case"] == case and not r.get("error")), None)


def _added(results: list[dict], r: dict) -> str:
    """CPU over the reference: a mux row over hls-mux, a players' row over its server's mux row."""
    if r["case"] == "hls-mux":
        return ""
    ref_case = "hls-mux" if r["players"] == 0 else ("llhls-mux" if r["llhls"] else "hls-mux")
    ref = _row(results, ref_case)
    return "-" if ref is None else f"{r['server_cpu_pct'] - ref['server_cpu_pct']:+.2f} (over {ref_case})"


def table(results: list[dict]) -> str:
    lines = [
        "| case | LL-HLS | players ok | server CPU % | added CPU % | RSS MiB | media GETs/s (per player min-max "
        "in window) | playlist GETs/s | Mbit/s | media fetch p50 / p99 / max ms | errors "
        "| client CPU % (max proc / procs) | publisher CPU % | other CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ll = "on" if r["llhls"] else "off"
        if r.get("error"):
            lines.append(f"| {r['case']} | {ll} | {r['error']} | | | | | | | | | | | |")
            continue
        clients = r["client_cpu_pct"]
        if r["players"]:
            kind = "parts" if r["llhls"] else "segments"
            media = (f"{_f(r['media_per_s'])} {kind} ({r['media_per_player_min']}-{r['media_per_player_max']})")
            rest = (f"| {r['players_ok']}/{r['players']} | {_f(r['server_cpu_pct'], 2)} | {_added(results, r)} "
                    f"| {_f(r['server_rss_mib'])} | {media} | {_f(r['playlist_per_s'])} | {_f(r['mbit_s'])} "
                    f"| {_f(r['fetch_p50_ms'])} / {_f(r['fetch_p99_ms'])} / {_f(r['fetch_max_ms'])} | {r['errors']} "
                    f"| {_f(max(clients, default=None))} / {len(clients)}")
        else:
            rest = (f"| - | {_f(r['server_cpu_pct'], 2)} | {_added(results, r)} | {_f(r['server_rss_mib'])} "
                    f"| - | - | - | - | - | -")
        lines.append(f"| {r['case']} | {ll} {rest} | {_f(r['publisher_cpu_pct'])} | {_f(r['other_cpu_pct'])} |")
    return "\n".join(lines)


def reading(results: list[dict], players: int) -> list[str]:
    hm, lm = _row(results, "hls-mux"), _row(results, "llhls-mux")
    hp, lp = _row(results, f"hls-{players}"), _row(results, f"llhls-{players}")
    out = []
    if hm and lm:
        out.append(f"- LL-HLS muxing (CMAF parts and the LL playlist, next to the MPEG-TS segmenter) costs "
                   f"{lm['server_cpu_pct'] - hm['server_cpu_pct']:+.2f} % of one core for the stream "
                   f"({_f(lm['server_cpu_pct'], 2)} % against {_f(hm['server_cpu_pct'], 2)} % with MPEG-TS only).")
    if lm and lp:
        gets = lp["media_per_s"] + lp["playlist_per_s"]
        added = lp["server_cpu_pct"] - lm["server_cpu_pct"]
        out.append(f"- {lp['players']} LL players waiting on blocking reloads cost {added:+.2f} % of one core: "
                   f"{_f(lp['media_per_s'])} parts/s and {_f(lp['playlist_per_s'])} playlist reloads/s received "
                   f"({_f(1e3 * added / 100 / gets if gets else None, 3)} ms of CPU per request); a part came "
                   f"{_f(lp['fetch_p50_ms'])} ms (p50) / {_f(lp['fetch_p99_ms'])} ms (p99) after the reload that "
                   f"listed it, {lp['errors']} errors.")
    if hm and hp:
        gets = hp["media_per_s"] + hp["playlist_per_s"]
        added = hp["server_cpu_pct"] - hm["server_cpu_pct"]
        ratio = ""
        if lm and lp and added > 0:
            ratio = f"; LL players cost {(lp['server_cpu_pct'] - lm['server_cpu_pct']) / added:.1f}x as much"
        out.append(f"- {hp['players']} MPEG-TS players cost {added:+.2f} % ({_f(hp['media_per_s'])} segments/s, "
                   f"{_f(hp['playlist_per_s'])} playlists/s, {_f(hp['mbit_s'])} Mbit/s){ratio}.")
    return out


def section(results: list[dict], machine: dict, args, source: Path) -> str:
    m = machine
    procs = -(-args.players // args.players_per_proc)
    lines = [
        f"Run {m['date_utc']} at commit {m['git_commit']}: {m['nproc']} cores ({m['cpu_model']}), Linux {m['kernel']}, "
        f"Python {m['python']}; load average {m['loadavg']} at the start. Command: `python -m bench.llhls`. "
        f"One publisher of `{source.name}` (720p30 H.264 + AAC, 1 s GOP) per server; MPEG-TS HLS 2 s fragments "
        f"in both, LL-HLS (`LLHLS_ENABLED=1`, parts of at most 0.2 s, 1 s segments) in the second. Each case "
        f"{args.seconds:g} s measured (mux cases {args.mux_warmup:g} s after the playlists were ready; players in "
        f"{procs} processes started over {SPREAD:g} s, then {args.warmup:g} s warm-up).",
        "",
        table(results),
        "",
        *reading(results, args.players),
    ]
    notes = []
    for r in results:
        n = r.get("notes") or {}
        if r["players"] if "players" in r else False:
            if n.get("part_target") and r["llhls"]:
                notes.append(f"PART-TARGET {n['part_target']} s ({n['part_frames']} frames)")
            if n.get("llhls_problems"):
                notes.append("LL-HLS log: " + "; ".join(n["llhls_problems"]))
            if r.get("error_kinds"):
                notes.append(f"{r['case']} errors: " + "; ".join(f"{k} (x{v})" for k, v in r["error_kinds"].items()))
    if notes:
        lines += ["", ". ".join(notes) + "."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.llhls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--players", type=int, default=100)
    parser.add_argument("--players-per-proc", type=int, default=25, help="players per client process")
    parser.add_argument("--seconds", type=float, default=30.0, help="each measured window")
    parser.add_argument("--warmup", type=float, default=6.0, help="s after the last player started")
    parser.add_argument("--mux-warmup", type=float, default=2.0, help="s after the playlists were ready")
    parser.add_argument("--only", default="hls,llhls", help="comma-separated servers: hls (LL off), llhls (LL on)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        return client_main(argv[1:])
    args = parse_args(argv)
    loadavg = " ".join(os.getloadavg().__repr__().strip("()").split(", ")[:3])
    loadavg = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    source = source_flv(gop=GOP)
    with tempfile.TemporaryDirectory(prefix="mv-bench-llhls-") as tmp:
        results = [row for key in args.only.split(",") for row in server_run(key == "llhls", args, source, Path(tmp))]
    machine = {**report.machine_info(None), "loadavg": loadavg}
    text = section(results, machine, args, source)
    print()
    print(text)
    settings = {"players": args.players, "players_per_proc": args.players_per_proc, "seconds": args.seconds,
                "warmup": args.warmup, "mux_warmup": args.mux_warmup, "spread": SPREAD, "source": source.name}
    path = report.write_json(OUT, results, machine, settings, prefix="llhls-")
    print(f"\nraw numbers: {path.relative_to(ROOT)}")
    if not args.no_doc:
        report.write_doc(text, "# Benchmarks\n", start=START, end=END, heading="## Low-Latency HLS")
        print(f"Low-Latency HLS section written to {report.DOC.relative_to(ROOT)}")
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
