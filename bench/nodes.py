"""Several media nodes: does the work spread, and what does the routing cost a publish?

    python -m bench.nodes [--max-streams 32] [--seconds 5] [--warmup 3] [--runs 5] [--no-doc]

Both parts run the production layout without Docker (tests/support/cluster.py: PostgreSQL, Redis,
web, media nodes, Celery, nginx with the production template), DEBUG=0.
- Capacity: streams are added (1, 2, 4, 6, 8, then by fours), each created through the API (its push URL names
  the least loaded node) with bench/publisher.py's real-time 720p30 clip and 10 RTMP readers
  (bench/readers.py) on the play URL the API returns; after each addition every reader's frame
  rate is measured over `--seconds`. The capacity is the most streams at which no reader fell
  below FPS_OK (29 of the source's 30 fps). One node, then two nodes on the same machine: the
  publishers and readers share its cores with the servers, so the figures compare layouts,
  not machines.
- Publish to first frame: from the start of a publish to the first coded video frame an HTTP-FLV
  player gets. Through the front: the owner asks the API (through nginx) where to publish
  (`/ingest`, the allocation step), publishes there, and the player polls the generic
  `https://.../flv/{room}.flv` through nginx (the web host redirects to the holder).
  Straight: publish to a node's RTMP port, poll that node's own FLV port. Median of `--runs`,
  interleaved.

The tables replace the section between `<!-- bench:nodes:start -->` and `...:end -->` in
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import ssl
import statistics
import subprocess
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

from media.codecs.flv import TAG_VIDEO
from rtmp.codec import FlvReader
from tests.support.cluster import Cluster, cluster

from . import procstat, report
from .rtmpclient import is_coded_frame
from .run import ROOT, _python
from .source import OUT, source_flv
from .stats import FPS_OK, load_sends, summarize

START, END = "<!-- bench:nodes:start -->", "<!-- bench:nodes:end -->"
TLS = ssl._create_unverified_context()  # the cluster's self-signed certificate
READERS = 10


def _call(c: Cluster, path: str, body: dict | None = None, token: str | None = None) -> dict:
    request = urllib.request.Request(
        c.base + path, method="POST" if body is not None else "GET",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=15, context=TLS) as response:
        return json.loads(response.read())["data"]


def _owner(c: Cluster) -> str:
    name = f"bench{time.monotonic_ns() % 10**8}"
    return _call(c, "/api/v1/auth/register", {"username": name, "password": "long-enough-1"})["access"]


def _room(c: Cluster, token: str) -> dict:
    return _call(c, "/api/v1/live/create", {"title": "bench", "push_protocol": "rtmp"}, token)


def _publisher(url: str, source: Path, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(_python("bench.publisher", url, str(source), str(log)), cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    if "publishing" not in (proc.stdout.readline() if proc.stdout else ""):
        proc.kill()
        raise RuntimeError(f"the publisher to {url} did not start")
    return proc


def _wait_live(c: Cluster, room_id: str, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        room = _call(c, f"/api/v1/live/{room_id}")
        if room["status"] == "live" and "/node/" in room["play_urls"]["flv"]:
            return room
        time.sleep(0.2)
    raise RuntimeError(f"room {room_id} did not go live")


def _measure(streams: list[dict], args, tmp: Path, step: int) -> dict:
    """Every stream's readers over one window; the worst reader's fps and the servers' CPU."""
    t0 = time.monotonic() + 1.0 + args.warmup
    t1 = t0 + args.seconds
    clients = []
    for index, stream in enumerate(streams):
        out = tmp / f"readers-{step}-{index}.json"
        clients.append((stream, out, subprocess.Popen(_python(
            "bench.readers", "rtmp", stream["rtmp"], "--count", str(READERS), "--t0", f"{t0:.6f}",
            "--t1", f"{t1:.6f}", "--out", str(out)), cwd=ROOT)))
    meters = {node: procstat.Meter(lambda pid=pid: procstat.tree(pid)) for node, pid in streams[0]["node_pids"].items()}
    usage, machine_pct = procstat.measure(meters, t0, t1)
    usage = {node: round(u.cpu_pct, 1) for node, u in usage.items()}
    machine_pct = round(machine_pct, 1)
    time.sleep(1.0)  # the publishers flush their send logs every 0.5 s
    fps_min, behind = None, 0
    for stream, out, proc in clients:
        proc.wait(60)
        readers = json.loads(out.read_text()) if out.exists() else []
        summary = summarize(readers, load_sends(stream["log"]), t0, t1)
        worst = summary["fps_min"] if len(readers) == READERS else 0.0
        fps_min = worst if fps_min is None else min(fps_min, worst or 0.0)
        behind += summary["readers_behind"] + READERS - len(readers)
    return {"streams": len(streams), "fps_min": fps_min, "readers_behind": behind, "node_cpu_pct": usage,
            "machine_cpu_pct": machine_pct}


def steps_of(most: int) -> list[int]:
    """Stream counts to measure at: one by one at first, then by fours."""
    return [n for n in (1, 2, 4, 6, 8, *range(12, most + 1, 4)) if n <= most] or [most]


def _stream_add(c: Cluster, token: str, source: Path, log: Path, publishers: list) -> dict:
    """A new room published to the push URL the API gives, and where the API says to play it."""
    created = _room(c, token)
    publishers.append(_publisher(created["push_urls"]["rtmp"], source, log))
    room = _wait_live(c, created["room"]["room_id"])
    node = next(n for n in c.nodes if f"/node/{n}/" in room["play_urls"]["flv"])
    return {"rtmp": room["play_urls"]["rtmp"], "log": log, "node": node}


def capacity(nodes: int, args, source: Path, tmp: Path) -> dict:
    steps, streams, publishers = [], [], []
    with cluster(nodes, env={"HLS_ENABLED": "0"}) as c:
        token = _owner(c)
        pids = {node_id: node.proc.pid for node_id, node in c.nodes.items()}
        try:
            for count in steps_of(args.max_streams):
                while len(streams) < count:
                    streams.append(_stream_add(c, token, source, tmp / f"publisher-{nodes}-{len(streams)}.log",
                                               publishers))
                    streams[-1]["node_pids"] = pids
                step = {**_measure(streams, args, tmp, count),
                        "placed": {n: sum(1 for s in streams if s["node"] == n) for n in c.nodes}}
                steps.append(step)
                print(f"  {nodes} node(s), {count} streams: worst reader {step['fps_min']} fps, "
                      f"{step['readers_behind']} behind, CPU {step['node_cpu_pct']} (machine "
                      f"{step['machine_cpu_pct']}), placed {step['placed']}",
                      flush=True)
                if step["readers_behind"] or (step["fps_min"] or 0) < FPS_OK:
                    break
        finally:
            for publisher in publishers:
                publisher.kill()
    held = [s["streams"] for s in steps if not s["readers_behind"] and (s["fps_min"] or 0) >= FPS_OK]
    return {"nodes": nodes, "capacity": max(held, default=0), "steps": steps,
            "limit_reached": bool(steps) and steps[-1]["streams"] not in held}


def _first_frame(url: str, started: float, timeout: float = 15) -> float:
    """Poll an HTTP-FLV URL (redirects followed) until it streams; seconds from `started` to the
    first coded video frame."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5, context=TLS) as response:
                flv = FlvReader()
                while data := response.read1(1 << 16):
                    for tag in flv.feed(data):
                        if tag.tag_type == TAG_VIDEO and is_coded_frame(tag.payload):
                            return time.monotonic() - started
        except (urllib.error.HTTPError, ConnectionError):
            time.sleep(0.02)
    raise RuntimeError(f"no frame from {url}")


def first_frame(args, source: Path, tmp: Path) -> dict:
    runs: dict[str, list[float]] = {"front": [], "straight": []}
    with cluster(2, env={"HLS_ENABLED": "0"}) as c:
        token = _owner(c)
        for run in range(args.runs):
            for path in runs:
                room = _room(c, token)
                room_id, key = room["room"]["room_id"], room["stream_key"]
                started = time.monotonic()
                if path == "front":
                    server = _call(c, f"/api/v1/live/{room_id}/ingest", token=token)["rtmp_server"]
                    play = f"{c.base}/flv/{room_id}.flv"
                else:
                    node = c.nodes["media-2"]
                    server = f"rtmp://127.0.0.1:{node.rtmp_port}/live"
                    play = f"http://127.0.0.1:{node.http_port}/flv/{room_id}.flv"
                publisher = subprocess.Popen(_python("bench.publisher", f"{server}/{key}", str(source),
                                                     str(tmp / f"first-{path}-{run}.log")), cwd=ROOT,
                                             stdout=subprocess.DEVNULL)
                try:
                    runs[path].append(round(_first_frame(play, started), 3))
                finally:
                    publisher.kill()
                    publisher.wait(10)
                time.sleep(1.0)  # the session ends before the next run
        print(f"  publish to first frame: {runs}", flush=True)
    return {path: {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values),
                   "runs": values} for path, values in runs.items()}


def section(data: dict, machine: dict, args) -> str:
    one, two = data["capacity"]
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine.get('cpu_model', '?')} "
        f"({machine.get('nproc', '?')} cores); `python -m bench.nodes`: streams added (1, 2, 4, 6, 8, then by fours), "
        f"{READERS} RTMP readers each, every reader's fps over {args.seconds} s after each addition.",
        "",
        "| layout | streams held (every reader >= 29 fps) | last step: worst reader fps | last step: node CPU % "
        "(of a core) | last step: machine CPU % (100 per core) | last step: streams per node |",
        "|---|---:|---:|---|---:|---|",
    ]
    for result in (one, two):
        last = result["steps"][-1] if result["steps"] else {}
        more = "" if result["limit_reached"] else f" (the bench stopped at {args.max_streams})"
        cpu = ", ".join(f"{node} {pct}" for node, pct in last.get("node_cpu_pct", {}).items())
        placed = ", ".join(f"{node} {count}" for node, count in last.get("placed", {}).items())
        lines.append(f"| {result['nodes']} media node(s) | {result['capacity']}{more} | {last.get('fps_min')} | "
                     f"{cpu} | {last.get('machine_cpu_pct')} | {placed} |")
    first = data["first_frame"]
    lines += [
        "",
        f"Publish to first frame (HTTP-FLV), median of {args.runs} runs (min-max):",
        "",
        "| path | median s | min-max s |",
        "|---|---:|---|",
        f"| through nginx: `/ingest` (allocation) + generic `/flv/` URL (the web host redirects to the holder) | "
        f"{first['front']['median_s']:.3f} | {first['front']['min_s']:.3f}-{first['front']['max_s']:.3f} |",
        f"| straight to a node's RTMP and FLV ports | {first['straight']['median_s']:.3f} | "
        f"{first['straight']['min_s']:.3f}-{first['straight']['max_s']:.3f} |",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-streams", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-doc", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = source_flv()
    machine = report.machine_info(None)
    with tempfile.TemporaryDirectory(prefix="mv-bench-nodes-") as tmp:
        try:
            data = {"capacity": [capacity(n, args, source, Path(tmp)) for n in (1, 2)],
                    "first_frame": first_frame(args, source, Path(tmp))}
        except Exception:
            traceback.print_exc()
            return 1
    path = report.write_json(OUT, data, machine, vars(args), prefix="nodes-")
    print(f"wrote {path}")
    if not args.no_doc:
        report.write_doc(section(data, machine, args), "# Benchmarks\n", start=START, end=END,
                         heading="## Several media nodes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
