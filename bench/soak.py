"""Soak: MicroVibe under a steady mixed load for an hour, publishers killed now and then (`make soak`).

    python -m bench.soak [--minutes 60] [--kill-every 10] [--out bench/out/soak-<time>.json] [--no-doc]
                         [--rtmp 100] [--flv 50] [--hls 20] [--webrtc 10] [--kill-order rtmp0,whip,rtmp1,rtmp2]

One `manage.py serve` (bench/microvibe.py: media plane, SQLite, HLS on, free loopback ports), four rooms:
`rtmp0`-`rtmp2` published by ffmpeg (`-re -stream_loop -1 -c copy` of the bench's 720p30 clip without
B-frames, so WebRTC viewers get it without a re-encode), `whip` by an aiortc WHIP publisher
(`python -m bench.bridges whip-publisher`, 640x360 30 fps H.264 from aiortc's encoder). Viewers, spread
round-robin over the four streams, in client processes of at most 50 (bench/soak_clients.py): RTMP and
HTTP-FLV readers, HLS players (bench/hls_players.py), WHEP viewers (aiortc, frames counted, not
decoded). Each viewer lives a random 10-120 s and is replaced when it leaves.

Every `--kill-every` minutes (30 s into the minute, so the per-minute samples fall between kills) one
publisher, in `--kill-order`, is SIGKILLed (its TCP connection or peer connection simply vanishes, no
unpublish) and restarted at once, again until the server takes it (a WHIP publisher is refused while the
server still holds the old one, until ICE consent expires).

Each minute: the server's process tree (RSS summed, open fds counted in /proc/PID/fd, threads from
/proc/PID/status; the median of samples every 5 s in the minute; CPU % of one core over the minute), the
viewers the server counts (its /metrics), per viewer kind the viewers there the whole minute and those
below the source rate (29 fps; HLS: fewer segments than 90 % of the minute's 2 s fragments), not counting
the viewers of a killed stream in the minutes around its kill, the viewers' failures, and the server
log's warning and error lines (expected: those of a killed publisher around its kill; every other one is
printed). At the end every viewer leaves, the publishers stop cleanly (ffmpeg SIGINT: FCUnpublish and
deleteStream; the WHIP publisher DELETEs its session), then: the server's viewer gauges must be 0, and in
the database (Django ORM, the server's own settings and environment) every LiveSession ended with the
reason the server gives a vanished publisher (a killed one) or a clean unpublish (the last session of each
room). Verdicts: PASS/FAIL per rule. Raw figures: `--out` (default bench/out/soak-<UTC time>.json) and
the server's log next to it; the table goes into docs/benchmarks.md between `<!-- bench:soak:start -->`
and `<!-- bench:soak:end -->` unless `--no-doc`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import procstat
from .report import machine_info
from .source import OUT, source_flv
from .stats import FPS_OK
from .tools import require

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
DOC_START, DOC_END = "<!-- bench:soak:start -->", "<!-- bench:soak:end -->"
MINUTE = 60.0
KINDS = ("rtmp", "flv", "hls", "webrtc")
PER_PROC = {"rtmp": 50, "flv": 50, "hls": 50, "webrtc": 4}  # aiortc viewers cost more: 4 per process
STALL = {"rtmp": 10.0, "flv": 10.0, "hls": 15.0, "webrtc": 10.0}  # s without a frame: the viewer failed
HLS_FRAGMENT = 2
HLS_OK = 0.9 * MINUTE / HLS_FRAGMENT  # segments a whole minute must bring an HLS player
SAMPLE_EVERY = 5.0
KILL_OFFSET = 30.0  # s into the minute a kill happens
STARTUP = 15.0  # s from starting the client processes to minute 0 (imports, first viewers connected)
EXCUSE_BEFORE, EXCUSE_AFTER = 2.0, 20.0  # around a kill (to the restarted publish): its viewers may fail
ERRORS_AFTER = 30.0  # a viewer's failure this long after the restart still counts as the kill's
RESTART_WITHIN = 60.0  # s a killed publisher must be taken again in (a WHIP one: ICE consent expiry first)
# What the server records in LiveSession.end_reason (media/control.py, sfu/rooms.py): an RTMP publisher
# whose TCP connection vanished (EOF/reset: rtmp/conn.py _on_gone) and a WHIP publisher whose ICE consent
# expired ("timeout") end "publisher_left", and so do a clean RTMP unpublish (FCUnpublish/deleteStream)
# and a WHIP DELETE ("closed").
KILLED_REASON = {"rtmp": "publisher_left", "webrtc": "publisher_left"}
STOPPED_REASON = {"rtmp": "publisher_left", "webrtc": "publisher_left"}
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+): (.*)$")
WARN_LEVELS = ("WARNING", "ERROR", "CRITICAL")
# Warning/error lines of the server's log that a kill explains, when they come within the kill's window
# (regexes on "LEVEL logger: message"; {room} is the killed publisher's room); any other warning or error
# line is unexpected. As the server logs them:
# - a publisher's end itself is an INFO line ("rtmp ...: ROOM ended (publisher_left)", "sfu: ROOM WebRTC
#   publisher gone (timeout)"): nothing to expect;
# - the end of a stream closes its WHEP viewers' sessions on the server, so a viewer's DELETE that follows
#   (a viewer leaving) is answered 404, which Django logs at WARNING.
# - while the server still holds a killed WHIP publisher's session (until its ICE consent expires), the
#   restarted publisher's POSTs are refused 409 already_live, which Django logs at WARNING.
# - viewers joining the stream while it is down: a WHEP POST is answered 404 not_live (also logged by
#   Django); RTMP and HTTP-FLV refusals are INFO lines.
EXPECTED_AROUND_KILL: list[str] = [r"^WARNING django\.request: Not Found: /whep/{room}(/|$)",
                                   r"^WARNING django\.request: Conflict: /whip/{room}$"]
# ... and at the final stop (publishers unpublishing, then the server's SIGTERM): none so far.
EXPECTED_AT_STOP: list[str] = []


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


# --- the server's process tree ---------------------------------------------------------------------

def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _threads(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Sample:
    t: float
    rss: int
    fds: int
    threads: int
    procs: int


def tree_sample(root: int) -> Sample:
    """RSS (summed), open fds and threads of `root` and its descendants now."""
    pids = procstat.tree(root)
    return Sample(time.monotonic(), procstat.rss_bytes(pids), sum(_fds(p) for p in pids),
                  sum(_threads(p) for p in pids), len(pids))


class CpuCounter:
    """CPU seconds of a changing set of processes; a process that exits keeps what it used."""

    def __init__(self) -> None:
        self.last: dict[int, float] = {}

    def total(self, pids: list[int]) -> float:
        for pid in pids:
            value = procstat.cpu_seconds(pid)
            if value is not None:
                self.last[pid] = value
        return sum(self.last.values())


def metrics(base: str) -> dict[str, dict[str, float]]:
    """The media node's /metrics: family -> {label string: value} (the few families the soak reads)."""
    out: dict[str, dict[str, float]] = {}
    try:
        text = _get(base + "/metrics").decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name_labels, value = line.rsplit(" ", 1)
        name, _, labels = name_labels.partition("{")
        if name in ("microvibe_viewers", "microvibe_streams", "microvibe_viewer_sessions_total",
                    "microvibe_sessions_ended_total", "microvibe_slow_viewer_drops_total"):
            labels = ",".join(p for p in labels.rstrip("}").split(",") if p and not p.startswith("node="))
            out.setdefault(name, {})[labels] = float(value)
    return out


def viewers_now(m: dict) -> dict[str, int]:
    gauges = m.get("microvibe_viewers", {})
    return {kind: int(sum(v for k, v in gauges.items() if f'protocol="{kind}"' in k)) for kind in KINDS}


# --- publishers ------------------------------------------------------------------------------------

@dataclass
class Kill:
    publisher: str
    at: float  # CLOCK_MONOTONIC of the SIGKILL
    wall: str
    ok_at: float | None = None  # the restarted publish was taken
    attempts: int = 0
    notes: list[str] = field(default_factory=list)


class Publisher:
    def __init__(self, name: str, kind: str, room: str, command: list[str], log_path: Path, api: str) -> None:
        self.name, self.kind, self.room, self.command, self.log_path = name, kind, room, command, log_path
        self.api = api  # the room's detail URL
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.unexpected_exits: list[str] = []
        self.given_up = False  # its restart after a kill was never taken: not started again
        self.cpu = CpuCounter()
        self.pids: list[int] = []

    def _status(self) -> str:
        try:
            return json.loads(_get(self.api))["data"]["status"]
        except (OSError, ValueError, KeyError):
            return "?"

    def _attempt(self, timeout: float = 30.0) -> tuple[bool, str]:
        """Start once; (taken, why not)."""
        with self.log_path.open("a") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')}\n")
        out = self.log_path.open("a")
        stdout = subprocess.PIPE if self.kind == "webrtc" else out
        self.proc = subprocess.Popen(self.command, cwd=ROOT, stdout=stdout, stderr=out, text=True,
                                     stdin=subprocess.DEVNULL)
        out.close()
        self.pids.append(self.proc.pid)
        deadline = time.monotonic() + timeout
        if self.kind == "webrtc":  # bench.bridges whip-publisher prints answered= on a 201, error= otherwise
            assert self.proc.stdout is not None
            while time.monotonic() < deadline:
                ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
                if not ready:
                    continue
                line = self.proc.stdout.readline()
                if not line:
                    break
                if line.startswith("answered="):
                    threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
                    return True, ""
                if line.startswith("error="):
                    self.proc.wait(10)
                    return False, line.strip()
            self.proc.kill()
            self.proc.wait(10)
            return False, "no answer"
        while time.monotonic() < deadline:  # ffmpeg: running and the room live
            if self.proc.poll() is not None:
                return False, f"ffmpeg exited {self.proc.returncode}"
            if self._status() == "live":
                time.sleep(1.0)
                if self.proc.poll() is None:
                    return True, ""
            time.sleep(0.25)
        self.proc.kill()
        self.proc.wait(10)
        return False, "room not live"

    def _drain(self, proc: subprocess.Popen) -> None:
        with open(self.log_path, "a") as log:
            for line in proc.stdout or ():
                log.write(line)

    def start(self, kill: Kill | None = None, within: float = 90.0) -> bool:
        """Start until the server takes it (a killed WHIP publisher's session holds the room for a while)."""
        deadline = time.monotonic() + within
        with self.lock:
            while time.monotonic() < deadline:
                ok, why = self._attempt()
                if kill is not None:
                    kill.attempts += 1
                if ok:
                    if kill is not None:
                        kill.ok_at = time.monotonic()
                    return True
                if kill is not None and why not in kill.notes:
                    kill.notes.append(why)
                time.sleep(1.0)
            if kill is not None:
                self.given_up = True  # (under the lock: check_alive must not start it again)
        return False

    def kill(self) -> Kill:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(10)
            return Kill(self.name, time.monotonic(), time.strftime("%H:%M:%S"))

    def restart(self, kill: Kill) -> None:
        if self.kind == "rtmp":  # the server's end of the old session first, so "live" means the new one
            deadline = time.monotonic() + 10
            while self._status() == "live" and time.monotonic() < deadline:
                time.sleep(0.1)
        if not self.start(kill, within=RESTART_WITHIN + 30):
            kill.notes.append("not taken again: given up")

    def stop(self) -> int | None:
        """The clean end: ffmpeg on SIGINT unpublishes (FCUnpublish, deleteStream); the WHIP publisher on
        SIGTERM DELETEs its session."""
        with self.lock:
            proc = self.proc
            if proc is None or proc.poll() is not None:
                return None if proc is None else proc.returncode
            proc.send_signal(signal.SIGINT if self.kind == "rtmp" else signal.SIGTERM)
            try:
                return proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait(5)

    def check_alive(self) -> None:
        """A publisher that exited by itself (not killed here) is noted and started again."""
        if not self.lock.acquire(blocking=False):
            return  # being started or killed
        try:
            if self.proc is not None and self.proc.poll() is not None and not self.given_up:
                self.unexpected_exits.append(f"{time.strftime('%H:%M:%S')} exit {self.proc.returncode}")
                self.proc = None
                threading.Thread(target=self.start, daemon=True).start()
        finally:
            self.lock.release()

    def terminate(self) -> None:
        """Whatever is left when the run failed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# --- the server's log ------------------------------------------------------------------------------

@dataclass
class LogRecord:
    t: float  # the line's own time (its asctime), on CLOCK_MONOTONIC
    level: str
    text: str  # "LEVEL logger: message" plus any continuation lines
    expected: str = ""  # why it is expected, or ""
    message: str = ""  # the bare message (formatted lines)
    paired: bool = False  # its bare duplicate was seen


TRACEBACK_LINE = re.compile(r"^(\s|Traceback |During handling|The above exception|[\w.]+(Error|Exception|Exit)\b)")
PAIR_BACK = 50  # records searched for a bare duplicate of a warning line


class LogReader:
    """The server's log (stdout + stderr of `manage.py serve`), its warning/error lines and unformatted lines.

    With DEBUG on (the bench's default), Django's own console handler prints each django.* warning a second
    time, bare ("Not Found: /whep/..."), next to the formatted line but not always adjacent to it: a bare line
    equal to a nearby warning's message is that warning, not a line of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = ""
        self.records: list[LogRecord] = []  # warning+ lines and unformatted lines
        self.lines = 0
        self._last: LogRecord | None = None  # the record continuation lines belong to
        self.started = False  # a first formatted line was seen (before it: the start-up banner)
        self.mono_minus_wall = time.monotonic() - time.time()
        self._t = time.monotonic()  # the time of the last formatted line

    def _time(self, asctime: str) -> float:
        wall = time.mktime(time.strptime(asctime[:19], "%Y-%m-%d %H:%M:%S")) + int(asctime[20:23]) / 1000
        return wall + self.mono_minus_wall

    def read(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        self.offset += len(data)
        text = self.partial + data.decode(errors="replace")
        *lines, self.partial = text.split("\n")
        for line in lines:
            self.lines += 1
            match = LOG_LINE.match(line)
            if match:
                self.started = True
                self._t = self._time(match.group(1))
                level, message = match.group(2), match.group(4)
                self._last = None
                if level not in WARN_LEVELS:
                    continue
                record = LogRecord(self._t, level, f"{level} {match.group(3)}: {message}", message=message)
                for i in range(len(self.records) - 1, max(-1, len(self.records) - PAIR_BACK), -1):
                    bare = self.records[i]
                    if bare.level == "UNFORMATTED" and bare.text == message:
                        del self.records[i]  # its duplicate came first
                        record.paired = True
                        break
                self.records.append(record)
                self._last = record
            elif not self.started or not line.strip():
                continue  # the start-up banner ("MicroVibe is running:" and its URLs)
            elif self._last is not None and TRACEBACK_LINE.match(line):
                self._last.text += "\n" + line  # a traceback under a warning/error line
            else:
                for i in range(len(self.records) - 1, max(-1, len(self.records) - PAIR_BACK), -1):
                    formatted = self.records[i]
                    if formatted.message == line and not formatted.paired:
                        formatted.paired = True  # the duplicate of a warning already seen
                        break
                else:
                    self.records.append(LogRecord(self._t, "UNFORMATTED", line))


def classify(record: LogRecord, windows: list[tuple[float, float, str]], stop_at: float | None) -> None:
    """Mark `record` expected when a kill (window (from, to, room)) or the final stop explains it."""
    head = record.text.split("\n", 1)[0]
    for a, b, room in windows:
        if a <= record.t <= b and any(re.search(p.format(room=re.escape(room)), head) for p in EXPECTED_AROUND_KILL):
            record.expected = "kill"
            return
    if stop_at is not None and record.t >= stop_at and any(re.search(p, head) for p in EXPECTED_AT_STOP):
        record.expected = "stop"


# --- the run ---------------------------------------------------------------------------------------

@dataclass
class Stream:
    name: str
    room: str
    protocol: str  # the publisher's: rtmp | webrtc


def client_specs(args: argparse.Namespace, streams: list[Stream], server, t_start: float, t_end: float,
                 tmp: Path) -> list[tuple[str, Path, Path]]:
    """(kind, spec file, out file) of each client process; viewers round-robin over the streams."""
    svc = server.service
    urls = {
        "rtmp": lambda s: f"rtmp://127.0.0.1:{svc.rtmp_port}/live/{s.room}",
        "flv": lambda s: f"http://127.0.0.1:{svc.media_http_port}/flv/{s.room}.flv",
        "hls": lambda s: f"http://127.0.0.1:{svc.media_http_port}/hls/{s.room}.m3u8",
        "webrtc": lambda s: svc.url(f"/whep/{s.room}"),
    }
    out = []
    offset = 0
    for kind in KINDS:
        count = getattr(args, kind)
        slots = [{"stream": streams[(offset + i) % len(streams)].name,
                  "url": urls[kind](streams[(offset + i) % len(streams)])} for i in range(count)]
        offset += count
        procs = math.ceil(count / PER_PROC[kind]) if count else 0
        for p in range(procs):
            part = slots[p::procs]
            spec = {"kind": kind, "slots": part, "t_start": t_start, "t_end": t_end, "life_min": args.life_min,
                    "life_max": args.life_max, "seed": f"{args.seed}-{kind}-{p}", "stall": STALL[kind],
                    "retry": 1.0, "retry_max": 5.0}
            path = tmp / f"clients-{kind}-{p}.json"
            path.write_text(json.dumps(spec))
            out.append((kind, path, tmp / f"clients-{kind}-{p}.jsonl"))
    return out


class ClientOut:
    def __init__(self, kind: str, path: Path) -> None:
        self.kind, self.path = kind, path
        self.offset = 0
        self.minutes: dict[int, dict] = {}
        self.final: dict | None = None

    def read(self) -> None:
        if not self.path.exists():
            return
        with self.path.open() as f:
            f.seek(self.offset)
            while (line := f.readline()).endswith("\n"):
                self.offset = f.tell()
                data = json.loads(line)
                if data.get("final"):
                    self.final = data
                else:
                    self.minutes[data["minute"]] = data


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _taken(k: Kill) -> float:
    """When the killed publisher was taken again; one never taken again is excused for RESTART_WITHIN only."""
    return k.ok_at if k.ok_at is not None else k.at + RESTART_WITHIN


def kill_windows(kills: list[Kill], stream: str | None, after: float) -> list[tuple[float, float]]:
    return [(k.at - EXCUSE_BEFORE, _taken(k) + after) for k in kills if stream is None or k.publisher == stream]


def log_windows(kills: list[Kill], publishers: dict[str, Publisher]) -> list[tuple[float, float, str]]:
    return [(k.at - EXCUSE_BEFORE, _taken(k) + ERRORS_AFTER, publishers[k.publisher].room) for k in kills]


def minute_row(m: int, t0: float, t1: float, samples: list[Sample], cpu: dict, m_metrics: dict,
               clients: list[ClientOut], kills: list[Kill], log: LogReader) -> dict:
    inside = [s for s in samples if t0 < s.t <= t1] or samples[-1:]
    row: dict = {
        "minute": m,
        "rss_mib": round(_median([s.rss for s in inside]) / 2**20, 1),
        "rss_mib_max": round(max(s.rss for s in inside) / 2**20, 1),
        "fds": round(_median([s.fds for s in inside])), "fds_max": max(s.fds for s in inside),
        "threads": round(_median([s.threads for s in inside])), "threads_max": max(s.threads for s in inside),
        "procs": max(s.procs for s in inside),
        **cpu,
        "server_viewers": viewers_now(m_metrics),
        "streams": int(sum(m_metrics.get("microvibe_streams", {}).values())),
        "kills": [k.publisher for k in kills if t0 < k.at <= t1],
    }
    for kind in KINDS:
        whole = slow = excused = alive = connected = 0
        errors_expected, errors_unexpected = 0, []
        rates: list[float] = []
        reported = False
        for client in clients:
            if client.kind != kind or m not in client.minutes:
                continue
            reported = True
            data = client.minutes[m]
            alive += data["alive"]
            connected += data["connected"]
            for stream, units, seconds in data["whole"]:
                rate = units / seconds * (MINUTE if kind == "hls" else 1.0) if seconds else 0.0
                low = rate < (HLS_OK if kind == "hls" else FPS_OK)
                if any(a < t1 and b > t0 for a, b in kill_windows(kills, stream, EXCUSE_AFTER)):
                    excused += 1
                    continue
                whole += 1
                rates.append(rate)
                slow += low
            for t, stream, message in data["errors"]:
                if any(a <= t <= b for a, b in kill_windows(kills, stream, ERRORS_AFTER)):
                    errors_expected += 1
                else:
                    errors_unexpected.append(f"{stream}: {message}")
        row[kind] = {"reported": reported, "alive": alive, "connected": connected, "whole": whole, "slow": slow,
                     "excused": excused, "rate_min": round(min(rates), 1) if rates else None,
                     "errors_expected": errors_expected, "errors_unexpected": errors_unexpected}
    records = [r for r in log.records if t0 < r.t <= t1]
    row["log_expected"] = sum(1 for r in records if r.expected)
    row["log_unexpected"] = [r.text for r in records if not r.expected]
    return row


def print_row(row: dict) -> None:
    kinds = " ".join(f"{kind} {row[kind]['slow']}/{row[kind]['whole']}" + (f"(+{row[kind]['excused']})"
                     if row[kind]["excused"] else "") for kind in KINDS)
    errors = sum(row[k]["errors_expected"] for k in KINDS), sum(len(row[k]["errors_unexpected"]) for k in KINDS)
    viewers = "/".join(str(row["server_viewers"][k]) for k in KINDS)
    print(f"min {row['minute']:3d}: RSS {row['rss_mib']:7.1f} MiB  fds {row['fds']:4d}  threads {row['threads']:3d}  "
          f"CPU {row['server_cpu_pct']:5.1f} %  clients {row['clients_cpu_pct']:5.1f} % (max "
          f"{row['client_cpu_max_pct']:4.1f})  publishers {row['publishers_cpu_pct']:4.1f} %  "
          f"machine {row['machine_cpu_pct']:5.1f} %  viewers {viewers}  "
          f"slow/whole {kinds}  viewer errors {errors[0]}+{errors[1]}  log warn+ {row['log_expected']}+"
          f"{len(row['log_unexpected'])}" + (f"  killed {','.join(row['kills'])}" if row["kills"] else ""),
          flush=True)
    for kind in KINDS:
        for message in row[kind]["errors_unexpected"][:10]:
            print(f"    unexpected {kind} viewer error: {message}", flush=True)
    for text in row["log_unexpected"][:20]:
        print("    unexpected log line: " + text.replace("\n", "\n        "), flush=True)


SESSIONS_SCRIPT = """
import json
from live.models import LiveSession, Room
sessions = LiveSession.objects.select_related("room").order_by("started_at", "pk")
rows = [{"id": s.pk, "room": s.room.public_id, "protocol": s.protocol, "started": s.started_at.isoformat(),
         "ended": s.ended_at.isoformat() if s.ended_at else None, "reason": s.end_reason, "bytes": s.bytes_received,
         "peak_viewers": s.peak_viewers} for s in sessions]
print(json.dumps({"sessions": rows, "rooms": {r.public_id: r.status for r in Room.objects.all()}}))
"""


def db_sessions(server) -> dict:
    """Every LiveSession and room status, read through the ORM with the server's own settings and env."""
    done = server.service.manage("shell", "-c", SESSIONS_SCRIPT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def sessions_check(db: dict, streams: list[Stream], kills: list[Kill]) -> dict:
    problems = []
    by_room: dict[str, list[dict]] = {}
    for s in db["sessions"]:
        by_room.setdefault(s["room"], []).append(s)
    for stream in streams:
        sessions = by_room.get(stream.room, [])
        mine = [k for k in kills if k.publisher == stream.name]
        # A killed publisher taken again while the server still holds its stream continues its
        # session (reconnect grace, media/hub/registry.py): no session ends for that kill.
        ended = [k for k in mine if not (k.ok_at is not None and k.ok_at - k.at < _still_held(stream.protocol))]
        expected = [KILLED_REASON[stream.protocol]] * len(ended)
        if not mine or mine[-1].ok_at is not None:  # the publish that was stopped at the end
            expected.append(STOPPED_REASON[stream.protocol])
        got = [s["reason"] if s["ended"] else "OPEN" for s in sessions]
        if got != expected:
            problems.append(f"{stream.name} ({stream.room}): sessions ended {got}, expected {expected}")
        if db["rooms"].get(stream.room) == "live":
            problems.append(f"{stream.name} ({stream.room}): the room is still live")
    open_sessions = [s for s in db["sessions"] if not s["ended"]]
    return {"sessions": len(db["sessions"]), "open": len(open_sessions), "problems": problems}


def _still_held(protocol: str) -> float:
    """How long after a kill the server still holds the stream for a new publish: an RTMP one's
    connection is gone at once, then PUBLISH_GRACE; a WHIP one's peer connection lives until its
    ICE consent runs out (RTC_PEER_TIMEOUT), then the grace, and is taken over meanwhile once silent
    for PUBLISH_TAKEOVER_AFTER (the restarted publisher's retries are refused 409 until then)."""
    from media.config import MediaConfig

    config = MediaConfig.from_env(os.environ)
    if config.publish_grace <= 0:
        return 0.0
    peer = float(os.environ.get("RTC_PEER_TIMEOUT", "15")) if protocol == "webrtc" else 0.0
    return peer + config.publish_grace


def growth(rows: list[dict], key: str, base_minute: int) -> tuple[float, float, float]:
    """(value at the base minute, at the last minute, growth %)."""
    base = next(r[key] for r in rows if r["minute"] == base_minute)
    last = rows[-1][key]
    return base, last, (100.0 * (last - base) / base if base else 0.0)


def verdicts(rows: list[dict], end: dict, log: LogReader, minutes: int) -> list[dict]:
    base_minute = min(5, minutes // 2) + 1 if minutes > 1 else 1
    out = []
    rss = growth(rows, "rss_mib", base_minute)
    fds = growth(rows, "fds", base_minute)
    flat = f"minute {base_minute} -> {rows[-1]['minute']}"
    out.append({"rule": "RSS flat after the first minutes (growth < 5 %)", "pass": rss[2] < 5.0,
                "detail": f"{flat}: {rss[0]:.1f} -> {rss[1]:.1f} MiB ({rss[2]:+.1f} %), peak "
                          f"{max(r['rss_mib_max'] for r in rows):.1f} MiB"})
    out.append({"rule": "open fds flat after the first minutes (growth < 5 %)", "pass": fds[2] < 5.0,
                "detail": f"{flat}: {fds[0]} -> {fds[1]} ({fds[2]:+.1f} %), peak {max(r['fds_max'] for r in rows)}"})
    slow = {k: sum(r[k]["slow"] for r in rows) for k in KINDS}
    whole = {k: sum(r[k]["whole"] for r in rows) for k in KINDS}
    excused = sum(r[k]["excused"] for r in rows for k in KINDS)
    lows = {k: min((r[k]["rate_min"] for r in rows if r[k]["rate_min"] is not None), default=None) for k in KINDS}
    out.append({"rule": "no viewer below the source rate (29 fps; HLS 27 segments/min) but around a kill",
                "pass": not any(slow.values()),
                "detail": "; ".join(f"{k} {slow[k]} of {whole[k]} viewer-minutes, lowest {lows[k]}" for k in KINDS)
                          + f" ({excused} viewer-minutes of killed streams not counted)"})
    failures = [m for r in rows for k in KINDS for m in r[k]["errors_unexpected"]]
    expected_failures = sum(r[k]["errors_expected"] for r in rows for k in KINDS)
    out.append({"rule": "no viewer failure but around a kill", "pass": not failures,
                "detail": f"{len(failures)} unexpected, {expected_failures} around kills"
                          + (f"; first: {failures[0]}" if failures else "")})
    unexpected = [r for r in log.records if not r.expected]
    out.append({"rule": "no warning/error log line but the expected publisher ends", "pass": not unexpected,
                "detail": f"{len(unexpected)} unexpected, {len(log.records) - len(unexpected)} expected, "
                          f"of {log.lines} lines" + (f"; first: {unexpected[0].text.splitlines()[0]}"
                                                      if unexpected else "")})
    sessions = end["sessions_check"]
    viewers_left = end["viewers_after_leave"]
    ok = not sessions["problems"] and not sessions["open"] and not any(viewers_left.values()) \
        and not end["streams_after_stop"]
    out.append({"rule": "every live session closed with the right reason, every viewer session closed",
                "pass": ok,
                "detail": f"{sessions['sessions']} sessions, {sessions['open']} open"
                          + "".join(f"; {p}" for p in sessions["problems"])
                          + f"; viewer sessions open after every viewer left: {viewers_left}"
                          + f"; streams after the publishers stopped: {end['streams_after_stop']}"})
    return out


def run(args: argparse.Namespace) -> dict:
    from .microvibe import MicroVibe

    if args.hls and importlib.util.find_spec("bench.hls_players") is None:
        raise SystemExit("bench/hls_players.py (the HLS player client) is missing: run with --hls 0 until it is there")
    ffmpeg = require("ffmpeg")
    source = source_flv(bframes=False)  # WebRTC viewers of the RTMP streams get it without a re-encode
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out_path = Path(args.out or OUT / f"soak-{stamp}.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="mv-soak-"))
    result: dict = {"args": vars(args), "machine": machine_info(None), "source": source.name}
    procs: list[subprocess.Popen] = []
    publishers: dict[str, Publisher] = {}
    production_settings()
    try:
        with MicroVibe(hls=True) as server:
            _soak(server, args, ffmpeg, source, out_path, tmp, result, procs, publishers)
    finally:  # a failed run leaves no client or publisher behind
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        for publisher in publishers.values():
            publisher.terminate()
    shutil.rmtree(tmp, ignore_errors=True)
    out_path.write_text(json.dumps(result, indent=1))
    result["out"] = str(out_path)
    return result


def _soak(server, args: argparse.Namespace, ffmpeg: str, source: Path, out_path: Path, tmp: Path, result: dict,
          procs: list[subprocess.Popen], publishers: dict[str, Publisher]) -> None:
    seconds = args.minutes * MINUTE
    svc = server.service
    media = f"http://127.0.0.1:{svc.media_http_port}"
    log = LogReader(svc.log_path)
    streams = [Stream("rtmp0", server.room_id, "rtmp")]
    keys = {"rtmp0": server.stream_key}
    for name in ("rtmp1", "rtmp2"):
        publish_url, playlist = server.new_stream()
        streams.append(Stream(name, playlist.rsplit("/", 1)[1].removesuffix(".m3u8"), "rtmp"))
        keys[name] = publish_url.rsplit("/", 1)[1]
    whip_room, whip_key, _ = server.new_whip_stream()
    streams.append(Stream("whip", whip_room, "webrtc"))
    for s in streams:
        api = svc.url(f"/api/v1/live/{s.room}")
        if s.protocol == "rtmp":
            command = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning", "-re", "-stream_loop", "-1",
                       "-i", str(source), "-c", "copy", "-f", "flv",
                       f"rtmp://127.0.0.1:{svc.rtmp_port}/live/{keys[s.name]}"]
        else:
            command = _python("-m", "bench.bridges", "whip-publisher", svc.url(""), s.room, whip_key,
                              "--size", args.whip_size, "--seconds", str(seconds + 3600))
        publishers[s.name] = Publisher(s.name, s.protocol, s.room, command, tmp / f"publisher-{s.name}.log", api)
    print(f"MicroVibe pid {server.root_pid}, rooms "
          + ", ".join(f"{s.name}={s.room}" for s in streams) + f"; {args.minutes} min, a kill every "
          f"{args.kill_every} min; viewers: " + ", ".join(f"{getattr(args, k)} {k}" for k in KINDS), flush=True)
    for p in publishers.values():
        if not p.start(within=60):
            raise RuntimeError(f"publisher {p.name} did not start:\n{p.log_path.read_text()[-2000:]}\n"
                               f"{server.log()}")
    time.sleep(3.0)  # a first GOP through the server before anyone plays

    t_start = time.monotonic() + STARTUP
    t_end = t_start + seconds
    specs = client_specs(args, streams, server, t_start, t_end, tmp)
    for _, spec, out in specs:
        with open(str(out) + ".err", "w") as err:
            procs.append(subprocess.Popen(_python("-m", "bench.soak_clients", str(spec), str(out)), cwd=ROOT,
                                          stdout=subprocess.DEVNULL, stderr=err))
    clients = [ClientOut(kind, out) for kind, _, out in specs]
    print(f"{len(procs)} client processes: " + ", ".join(f"{sum(1 for k, _, _ in specs if k == kind)} {kind}"
                                                          for kind in KINDS), flush=True)
    order = [name for name in args.kill_order.split(",") if name in publishers]
    kill_times = []
    if args.kill_every > 0 and order:
        k = 1
        while (at := t_start + k * args.kill_every * MINUTE + KILL_OFFSET) <= t_end - KILL_OFFSET + 5:
            kill_times.append(at)
            k += 1
    kills: list[Kill] = []
    restarts: list[threading.Thread] = []
    samples: list[Sample] = []
    server_cpu, clients_cpu, pubs_cpu = CpuCounter(), CpuCounter(), CpuCounter()
    rows: list[dict] = []
    snap: dict[int, dict] = {}
    next_sample = time.monotonic()
    minute = 0

    def boundary() -> dict:
        pub_pids = [pid for p in publishers.values() for pid in p.pids]
        values = {"server": server_cpu.total(procstat.tree(server.root_pid)),
                  "clients": clients_cpu.total([p.pid for p in procs]), "publishers": pubs_cpu.total(pub_pids),
                  "machine": procstat.machine_busy_seconds(), "t": time.monotonic(),
                  "per_client": {p.pid: procstat.cpu_seconds(p.pid) or clients_cpu.last.get(p.pid, 0.0)
                                 for p in procs}}
        values["metrics"] = metrics(media)
        return values

    while minute < args.minutes or len(rows) < args.minutes:
        now = time.monotonic()
        log.read()
        if now >= next_sample:
            samples.append(tree_sample(server.root_pid))
            next_sample += SAMPLE_EVERY
            for p in publishers.values():
                p.check_alive()
        if kill_times and now >= kill_times[0]:
            kill_times.pop(0)
            victim = publishers[order[len(kills) % len(order)]]
            kill = victim.kill()
            kills.append(kill)
            print(f"  {kill.wall} SIGKILL {victim.name} (pid {victim.pids[-1]}), restarting", flush=True)
            thread = threading.Thread(target=victim.restart, args=(kill,), daemon=True)
            thread.start()
            restarts.append(thread)
        if minute <= args.minutes and now >= t_start + minute * MINUTE:
            snap[minute] = boundary()
            minute += 1
        done = len(rows) + 1
        if done in snap and now >= t_start + done * MINUTE + 5.0:
            for client in clients:
                client.read()
            a, b = snap[done - 1], snap[done]
            wall = b["t"] - a["t"]
            per_client = [(b["per_client"][pid] - a["per_client"].get(pid, 0.0)) / wall * 100
                          for pid in b["per_client"]]
            cpu = {"server_cpu_pct": round((b["server"] - a["server"]) / wall * 100, 1),
                   "clients_cpu_pct": round((b["clients"] - a["clients"]) / wall * 100, 1),
                   "client_cpu_max_pct": round(max(per_client, default=0.0), 1),
                   "publishers_cpu_pct": round((b["publishers"] - a["publishers"]) / wall * 100, 1),
                   "machine_cpu_pct": round((b["machine"] - a["machine"]) / wall * 100, 1)}
            windows = log_windows(kills, publishers)
            for record in log.records:
                if not record.expected:
                    classify(record, windows, None)
            row = minute_row(done, a["t"], b["t"], samples, cpu, b["metrics"], clients, kills, log)
            rows.append(row)
            print_row(row)
        time.sleep(0.25)

    # --- the end: viewers leave, publishers stop cleanly, then the checks -------------------------
    end: dict = {}
    for proc in procs:
        try:
            proc.wait(max(5.0, t_end + 60 - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for client in clients:
        client.read()
    end["client_exits"] = [p.returncode for p in procs]
    end["client_totals"] = {kind: {key: sum((c.final or {}).get(key, 0) for c in clients if c.kind == kind)
                                   for key in ("lives", "connected", "errors")} for kind in KINDS}
    end["client_errors_after_end"] = [e for c in clients for e in (c.final or {}).get("errors_after_end", [])]
    end["client_stderr"] = {c.path.name: Path(str(c.path) + ".err").read_text()[-2000:] for c in clients
                            if Path(str(c.path) + ".err").exists() and Path(str(c.path) + ".err").stat().st_size}
    viewers_left: dict[str, int] = {}
    deadline = time.monotonic() + 20  # HLS sessions close after 10 s without a request
    while time.monotonic() < deadline:
        viewers_left = viewers_now(metrics(media))
        if not any(viewers_left.values()):
            break
        time.sleep(1.0)
    end["viewers_after_leave"] = viewers_left
    end["viewer_sessions_opened"] = {k.split('"')[1]: int(v) for k, v in
                                     metrics(media).get("microvibe_viewer_sessions_total", {}).items() if '"' in k}
    for thread in restarts:
        thread.join(120)
    stop_at = time.monotonic()
    end["publisher_exits"] = {name: p.stop() for name, p in publishers.items()}
    end["publisher_unexpected_exits"] = {name: p.unexpected_exits for name, p in publishers.items()
                                         if p.unexpected_exits}
    streams_left = -1
    deadline = time.monotonic() + 30  # a WHIP publisher's end is reported when its peer connection closes
    while time.monotonic() < deadline:
        streams_left = int(sum(metrics(media).get("microvibe_streams", {}).values()))
        if streams_left == 0:
            break
        time.sleep(0.5)
    time.sleep(2.0)  # the session ends are written in the background
    end["streams_after_stop"] = streams_left
    end["sessions_ended_metric"] = metrics(media).get("microvibe_sessions_ended_total", {})
    db = db_sessions(server)
    end["sessions_check"] = sessions_check(db, streams, kills)
    end["db"] = db
    log.read()
    svc.stop()  # SIGTERM: the server's own shutdown, its lines are checked too
    time.sleep(0.5)
    log.read()
    end["server_exit"] = svc.proc.returncode if svc.proc else None
    db_after = db_sessions(server)
    end["sessions_changed_by_shutdown"] = [s for s in db_after["sessions"]
                                           if s not in db["sessions"]]
    windows = log_windows(kills, publishers)
    for record in log.records:
        if not record.expected:
            classify(record, windows, stop_at)
    stop_records = [r for r in log.records if r.t >= stop_at]
    end["log_at_stop"] = [asdict(r) for r in stop_records]
    server_log = out_path.with_name(out_path.stem + "-server.log")
    shutil.copyfile(svc.log_path, server_log)
    for p in publishers.values():
        shutil.copyfile(p.log_path, out_path.with_name(out_path.stem + f"-{p.name}.log"))
    result.update({"streams": [asdict(s) for s in streams], "kills": [asdict(k) for k in kills], "rows": rows,
                   "end": end, "log_records": [asdict(r) for r in log.records], "log_lines": log.lines,
                   "server_log": str(server_log)})
    result["verdicts"] = verdicts(rows, end, log, args.minutes)


# --- the report ------------------------------------------------------------------------------------

def _kinds_cell(row: dict, kind: str) -> str:
    k = row[kind]
    return f"{k['slow']}/{k['whole']}" + (f" (+{k['excused']})" if k["excused"] else "")


def report(result: dict) -> str:
    m, a = result["machine"], result["args"]
    kills = ", ".join(f"{k['publisher']} at {k['wall']} (taken again after "
                      f"{(k['ok_at'] - k['at']):.1f} s, {k['attempts']} tries)" if k["ok_at"] else
                      f"{k['publisher']} at {k['wall']} (NOT restarted)" for k in result["kills"]) or "none"
    lines = [f"Run {m['date_utc']} at commit {m['git_commit']}: {m['nproc']} cores ({m['cpu_model']}), Python "
             f"{m['python']}; `python -m bench.soak --minutes {a['minutes']} --kill-every {a['kill_every']}`: "
             f"{a['rtmp']} RTMP + {a['flv']} HTTP-FLV readers, {a['hls']} HLS players, {a['webrtc']} WHEP viewers "
             f"over 4 streams (3 RTMP, 1 WHIP), each viewer living {a['life_min']:.0f}-{a['life_max']:.0f} s. "
             f"Kills: {kills}.", "",
             "| min | RSS MiB | fds | threads | server CPU % | clients CPU % (max proc) | machine CPU % "
             "| viewers rtmp/flv/hls/webrtc | slow/whole rtmp | flv | hls | webrtc | viewer failures exp/unexp "
             "| log warn+ exp/unexp | kill |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        viewers = "/".join(str(r["server_viewers"][k]) for k in KINDS)
        exp = sum(r[k]["errors_expected"] for k in KINDS)
        unexp = sum(len(r[k]["errors_unexpected"]) for k in KINDS)
        lines.append(f"| {r['minute']} | {r['rss_mib']:.1f} | {r['fds']} | {r['threads']} | {r['server_cpu_pct']:.1f} "
                     f"| {r['clients_cpu_pct']:.1f} ({r['client_cpu_max_pct']:.1f}) | {r['machine_cpu_pct']:.1f} "
                     f"| {viewers} | " + " | ".join(_kinds_cell(r, k) for k in KINDS)
                     + f" | {exp}/{unexp} | {r['log_expected']}/{len(r['log_unexpected'])} | "
                     f"{', '.join(r['kills'])} |")
    lines += ["", "*slow/whole*: viewers there the whole minute below the source rate / all of them; (+N): viewers "
              "of a killed stream in the minutes around its kill, not counted.", ""]
    for v in result["verdicts"]:
        lines.append(f"- **{'PASS' if v['pass'] else 'FAIL'}** {v['rule']}: {v['detail']}")
    return "\n".join(lines)


DOC_METHOD = """`make soak` (`python -m bench.soak`, not in CI: it takes an hour and loads the machine) runs
MicroVibe under a steady mixed load: 4 publishers (3 ffmpeg RTMP publishers of the bench's 720p30 clip
without B-frames, one aiortc WHIP publisher, 640x360 30 fps H.264), 100 RTMP and 50 HTTP-FLV readers,
20 HLS players and 10 WHEP viewers (aiortc, frames counted without decoding), spread round-robin over
the 4 streams in client processes of at most 50 viewers (4 for the aiortc ones). Every viewer lives a
random 10-120 s and is replaced when it leaves, so the counts hold on average. Every 10 minutes (30 s
into the minute) one publisher, in turn rtmp0, whip, rtmp1, rtmp2, is SIGKILLed (the connection just
vanishes, no unpublish) and restarted at once, again until the server takes it (a killed WHIP
publisher's session holds the room until its ICE consent expires). Each minute: the server's process
tree (RSS summed, open fds, threads: medians of samples every 5 s; CPU % of one core over the minute),
the viewers the server counts, per viewer kind the viewers there the whole minute and those below the
source rate (29 fps; HLS players: fewer than 27 segments of 2 s), the viewers of a killed stream in the
minutes around its kill not counted, the viewers' failures and the server log's warning and error lines.
At the end the viewers leave, the publishers stop cleanly (RTMP: FCUnpublish and deleteStream; WHIP:
DELETE), and the server's viewer sessions and the database's live sessions (Django ORM) are checked:
each killed publish must have ended with the reason the server gives a vanished publisher, the last of
each room with that of a clean unpublish (`publisher_left` for both, in RTMP and WebRTC alike).
Growth of RSS and fds is measured from the 6th minute (after the first 5) to the last; a run shorter
than 10 minutes measures from the minute after its first half's."""


def doc_update(path: Path, text: str) -> None:
    body = f"{DOC_START}\n{text}\n{DOC_END}"
    doc = path.read_text() if path.exists() else ""
    if DOC_START in doc and DOC_END in doc:
        doc = re.sub(re.escape(DOC_START) + ".*?" + re.escape(DOC_END), lambda _: body, doc, count=1, flags=re.S)
    else:
        doc = doc.rstrip("\n") + f"\n\n## Soak\n\n{DOC_METHOD}\n\n{body}\n"
    path.write_text(doc)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--kill-every", type=int, default=10, help="minutes between publisher kills (0: none)")
    parser.add_argument("--kill-order", default="rtmp0,whip,rtmp1,rtmp2", help="who is killed, in turn")
    parser.add_argument("--out", default="", help="the raw JSON (default bench/out/soak-<UTC time>.json)")
    parser.add_argument("--no-doc", action="store_true", help="do not touch docs/benchmarks.md")
    for kind, count in (("rtmp", 100), ("flv", 50), ("hls", 20), ("webrtc", 10)):
        parser.add_argument(f"--{kind}", type=int, default=count, help=f"{kind} viewers")
    parser.add_argument("--life-min", type=float, default=10.0, help="s a viewer lives, at least")
    parser.add_argument("--life-max", type=float, default=120.0, help="s a viewer lives, at most")
    parser.add_argument("--whip-size", default="640x360")
    parser.add_argument("--seed", default="soak")
    args = parser.parse_args(argv)
    if args.minutes < 1:
        parser.error("--minutes must be at least 1")
    return args


def production_settings() -> None:
    """DEBUG off, as production runs (with the strong secrets that requires), for the server and for
    this process's database check: with DEBUG on Django keeps each database connection's last 9000
    queries, a growth of several MiB per connection over the hour that a soak would read as a leak."""
    import secrets

    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))
    os.environ.setdefault("JWT_SECRET", secrets.token_hex(32))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    text = report(result)
    print("\n" + text, flush=True)
    print(f"\nraw: {result['out']}; server log: {result['server_log']}", flush=True)
    if not args.no_doc:
        doc_update(DOC, text)
        print(f"updated {DOC}", flush=True)
    return 0 if all(v["pass"] for v in result["verdicts"]) else 1


if __name__ == "__main__":
    sys.exit(main())
