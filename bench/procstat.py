"""CPU and memory of process trees, read from /proc (no psutil: the venv does not have it).

CPU is utime+stime from /proc/PID/stat, so it counts every thread of every process in the tree,
whichever core it ran on; "% of one core" = CPU seconds / wall seconds * 100.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after its closing ")".
    return raw[raw.rindex(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """root and all its live descendants (nginx master + workers; serve + any children)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(pid: int) -> float | None:
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15 of stat)


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            pass
    return total


@dataclass
class Usage:
    cpu_pct: float  # % of one core over the window
    rss_mib_max: float
    rss_mib_end: float


@dataclass
class Meter:
    """CPU over [start, stop] and RSS sampled every `interval` s for a set of process trees.

    `pids` is called at every sample, so processes that start (nginx workers) are picked up; a pid
    first seen mid-window counts from 0, so its whole CPU lands in the window (it started in it).
    """

    pids: Callable[[], list[int]]
    interval: float = 0.5
    _start: dict[int, float] = field(default_factory=dict)
    _last: dict[int, float] = field(default_factory=dict)
    _rss: list[int] = field(default_factory=list)
    _t0: float = 0.0
    _t1: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        pids = self.pids()
        for pid in pids:
            value = cpu_seconds(pid)
            if value is not None:
                self._last[pid] = value
        self._rss.append(rss_bytes(pids))

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._sample()
        self._start = dict(self._last)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> Usage:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._sample()
        self._t1 = time.monotonic()
        used = sum(v - self._start.get(pid, 0.0) for pid, v in self._last.items())
        wall = max(self._t1 - self._t0, 1e-9)
        return Usage(100.0 * used / wall, max(self._rss) / 2**20, self._rss[-1] / 2**20)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: user nice system irq softirq steal)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class MachineMeter:
    """Whole-machine CPU over the window, to show how much of it was not the benchmark's own work
    (another job on a shared machine makes every figure noisier)."""

    def start(self) -> None:
        self._t0, self._busy0 = time.monotonic(), machine_busy_seconds()

    def stop(self) -> float:
        """% of one core."""
        return 100.0 * (machine_busy_seconds() - self._busy0) / max(time.monotonic() - self._t0, 1e-9)


def measure(meters: dict[str, Meter], t0: float, t1: float) -> tuple[dict[str, Usage], float]:
    """Each meter's usage and the machine's CPU (% of one core) over the monotonic window [t0, t1]."""
    machine = MachineMeter()
    time.sleep(max(0.0, t0 - time.monotonic()))
    machine.start()
    for meter in meters.values():
        meter.start()
    time.sleep(max(0.0, t1 - time.monotonic()))
    usage = {name: meter.stop() for name, meter in meters.items()}
    return usage, machine.stop()


def server_meters(server_pid: int, publisher_pid: int, clients: list) -> dict[str, Meter]:
    """Meters of a bench run: the server's process tree, the publisher, each client process."""
    return {
        "server": Meter(lambda: tree(server_pid)),
        "publisher": Meter(lambda: [publisher_pid]),
        **{f"client{i}": Meter(lambda p=p: [p.pid]) for i, p in enumerate(clients)},
    }
