"""Churning viewers for the soak (bench/soak.py): one client process holding up to ~50 of one kind.

    python -m bench.soak_clients SPEC.json OUT.jsonl

SPEC: {"kind": "rtmp"|"flv"|"hls"|"webrtc", "slots": [{"stream": NAME, "url": URL}, ...], "t_start": T,
"t_end": T, "life_min": 10, "life_max": 120, "seed": N, "stall": 10, "retry": 1.0, "retry_max": 5.0} (times
CLOCK_MONOTONIC; a WebRTC slot's url is the WHEP endpoint `http://HOST:PORT/whep/{room}`).

Each slot is one viewer at a time: a viewer lives a random `life_min`-`life_max` s, then leaves (closes its
connection; WHEP: DELETE, then closes the peer connection; HLS: stops polling) and a new one starts at once,
so the counts hold on average. A viewer that fails (refused, closed by the server, no frame for `stall` s) is
an error with its time and stream; the slot starts a new one after `retry` s, twice as long after each
failure in a row up to `retry_max` s (5), as players back off while a stream is down.

What each viewer counts: RTMP and HTTP-FLV viewers (bench/readers.py's `rtmp_reader`/`flv_reader`) count
coded video frames; WebRTC viewers (aiortc) count the frames aiortc reassembles, without decoding
(`receiver_forward`); HLS players (bench/hls_players.py) count segments. At each minute boundary T_m =
t_start + 60 m every viewer that has had a frame is sampled; a viewer sampled at both ends of minute m was
there the whole minute, and its rate in that minute is what OUT gets. OUT gets one JSON line per minute:
{"minute", "t", "alive", "connected", "started", "ended", "whole": [[stream, units, seconds], ...],
"errors": [[t, stream, message], ...]}, then {"final": true, ...} once every viewer has left after t_end.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .readers import ReaderLog, flv_reader, rtmp_reader

MINUTE = 60.0


@dataclass(eq=False)
class Life:
    """One viewer from its start to its leave."""

    stream: str
    started: float
    first_at: float | None = None
    last_unit_at: float | None = None
    units: int = 0  # frames (RTMP, FLV, WebRTC) or segments (HLS) so far
    snaps: dict[int, tuple[float, int]] = field(default_factory=dict)  # minute -> (time, units)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)  # its sockets, closed when it leaves

    def unit(self, now: float) -> None:
        self.units += 1
        self.last_unit_at = now
        if self.first_at is None:
            self.first_at = now


# The life a reader task belongs to: bench/readers.py opens its sockets itself (asyncio.open_connection)
# and does not close them when cancelled, so every connection a life opens is noted and closed when it
# leaves (a leaked socket would stay a viewer on the server until its buffer filled).
_LIFE: contextvars.ContextVar[Life | None] = contextvars.ContextVar("soak_life", default=None)
_open_connection = asyncio.open_connection


async def _tracked_open_connection(*args: Any, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await _open_connection(*args, **kwargs)
    life = _LIFE.get()
    if life is not None:
        life.writers.append(writer)
    return reader, writer


asyncio.open_connection = _tracked_open_connection  # type: ignore[assignment]  # this process only


class _Counting:
    """bench/readers.py's window, counting every coded frame into the life (no per-frame log)."""

    def __init__(self, life: Life) -> None:
        self.life = life

    def record(self, log: ReaderLog, now: float, payload: bytes) -> None:
        log.frames_total += 1
        if log.first_frame_at is None:
            log.first_frame_at = now
        self.life.unit(now)


class Stalled(Exception):
    pass


async def _watch(life: Life, task: asyncio.Future, deadline: float, stall: float,
                 check: Callable[[], str | None] | None = None) -> None:
    """Until `deadline` (a normal leave) or the viewer fails: its task ended, no unit for `stall` s, or
    `check` names a failure."""
    while True:
        now = time.monotonic()
        if task.done():
            task.result()  # raises the viewer's error
            raise ConnectionError("the viewer ended by itself")
        if now >= deadline:
            return
        if now - (life.last_unit_at or life.started) > stall:
            raise Stalled(f"no {'frame' if life.first_at is None else 'new frame'} for {stall:.0f} s")
        if check is not None and (failure := check()):
            raise ConnectionError(failure)
        await asyncio.wait({task}, timeout=min(0.5, max(0.0, deadline - now)))


async def _stop(task: asyncio.Future) -> None:
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


async def _flv_rtmp_life(kind: str, url: str, life: Life, deadline: float, stall: float) -> None:
    reader = rtmp_reader if kind == "rtmp" else flv_reader

    async def run() -> None:
        _LIFE.set(life)
        await reader(url, ReaderLog(0), _Counting(life))  # type: ignore[arg-type]

    task = asyncio.ensure_future(run())
    try:
        await _watch(life, task, deadline, stall)
    finally:
        await _stop(task)
        for writer in life.writers:  # the viewer leaves: its connection closes (FIN)
            writer.close()


async def _hls_life(url: str, life: Life, deadline: float, stall: float, errors: list) -> None:
    from .hls_players import PlayerStats, hls_player

    stats = PlayerStats()
    stop = asyncio.Event()
    task = asyncio.ensure_future(hls_player(url, stop, stats))
    seen_errors = 0

    def check() -> str | None:
        nonlocal seen_errors
        while life.units < stats.segments:
            life.unit(time.monotonic())
        errs = stats.errors
        count = len(errs) if isinstance(errs, (list, tuple)) else int(errs)
        if count > seen_errors:  # a failed fetch the player went on after: an error, not the end of the viewer
            new = list(errs[seen_errors:count]) if isinstance(errs, (list, tuple)) \
                else [f"{count - seen_errors} failed fetch(es)"]
            errors.extend((round(time.monotonic(), 3), life.stream, f"hls: {e}"[:300]) for e in new)
            seen_errors = count
        return None

    try:
        await _watch(life, task, deadline, stall, check)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 10)
        except BaseException:  # noqa: BLE001 - a player that does not stop is cancelled
            await _stop(task)


async def _webrtc_life(url: str, life: Life, deadline: float, stall: float) -> None:
    from aiortc import RTCSessionDescription

    from sfu.aiortc_hooks import receiver_forward
    from tests.sfu.clients import http_async, peer_connection

    pc = peer_connection()
    location = None
    try:
        transceiver = pc.addTransceiver("video", direction="recvonly")
        receiver_forward(transceiver.receiver, lambda *_frame: life.unit(time.monotonic()))  # counted, not decoded
        await pc.setLocalDescription(await pc.createOffer())
        status, headers, body = await http_async("POST", url, pc.localDescription.sdp.encode(),
                                                 {"Content-Type": "application/sdp"})
        if status != 201:
            raise ConnectionError(f"WHEP refused: {status} {body[:200]!r}")
        location = url.split("/whep/")[0] + headers["Location"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))

        def check() -> str | None:
            return f"peer connection {pc.connectionState}" if pc.connectionState in ("failed", "closed") else None

        never = asyncio.get_running_loop().create_future()
        await _watch(life, never, deadline, stall, check)
    finally:
        if location is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(http_async("DELETE", location), 5)
        await pc.close()


class Clients:
    def __init__(self, spec: dict, out: Path) -> None:
        self.spec, self.out = spec, out
        self.kind: str = spec["kind"]
        self.t_start, self.t_end = float(spec["t_start"]), float(spec["t_end"])
        self.alive: set[Life] = set()
        self.ended_lives: list[Life] = []  # since the last report
        self.errors: list[tuple[float, str, str]] = []  # since the last report
        self.started = 0
        self.totals = {"lives": 0, "connected": 0, "errors": 0}

    def _life(self, url: str, life: Life, deadline: float) -> Awaitable[None]:
        stall = float(self.spec.get("stall", 10))
        if self.kind in ("rtmp", "flv"):
            return _flv_rtmp_life(self.kind, url, life, deadline, stall)
        if self.kind == "hls":
            return _hls_life(url, life, deadline, stall, self.errors)
        return _webrtc_life(url, life, deadline, stall)

    async def slot(self, index: int, stream: str, url: str) -> None:
        rng = random.Random(f"{self.spec.get('seed', 0)}-{index}")
        await asyncio.sleep(index * 0.02)  # stagger the first connects: a burst could overflow a listen backlog
        failures = 0  # in a row: the retry waits longer each time (1, 2, 4, 5 s), as players back off
        while time.monotonic() < self.t_end:
            life = Life(stream, time.monotonic())
            lifetime = rng.uniform(float(self.spec.get("life_min", 10)), float(self.spec.get("life_max", 120)))
            deadline = min(life.started + lifetime, self.t_end + 2.0)  # after t_end's report has been taken
            self.alive.add(life)
            self.started += 1
            self.totals["lives"] += 1
            failed = False
            try:
                await self._life(url, life, deadline)
            except Exception as error:  # noqa: BLE001 - any failure is a result to report
                failed = True
                message = f"{type(error).__name__}: {error}".replace("\n", " ")[:300]
                self.errors.append((round(time.monotonic(), 3), stream, message))
                self.totals["errors"] += 1
            finally:
                self.alive.discard(life)
                self.ended_lives.append(life)
                if life.first_at is not None:
                    self.totals["connected"] += 1
            failures = failures + 1 if failed else 0
            if failed:
                delay = min(float(self.spec.get("retry_max", 5.0)),
                            float(self.spec.get("retry", 1.0)) * 2 ** (failures - 1))
                await asyncio.sleep(max(0.0, min(delay, self.t_end - time.monotonic())))

    def report(self, minute: int, now: float) -> dict:
        whole = []
        for life in self.alive:
            if life.first_at is None:
                continue
            life.snaps[minute] = (now, life.units)
            before = life.snaps.get(minute - 1)
            if before is not None:
                whole.append([life.stream, life.units - before[1], round(now - before[0], 3)])
        line = {"minute": minute, "t": round(now, 3), "alive": len(self.alive),
                "connected": sum(1 for life in self.alive if life.first_at is not None),
                "started": self.started, "ended": len(self.ended_lives), "whole": whole, "errors": self.errors}
        self.errors, self.ended_lives, self.started = [], [], 0
        return line

    async def reporter(self) -> None:
        minutes = round((self.t_end - self.t_start) / MINUTE)
        with self.out.open("a") as out:
            for minute in range(0, minutes + 1):
                await asyncio.sleep(max(0.0, self.t_start + minute * MINUTE - time.monotonic()))
                line = self.report(minute, time.monotonic())
                if minute:
                    out.write(json.dumps(line) + "\n")
                    out.flush()

    async def run(self) -> None:
        if self.kind == "webrtc":
            from sfu.aiortc_hooks import h264_profiles_register

            h264_profiles_register()  # offer Main/High too, so the answer carries the stream's own profile
        reporter = asyncio.ensure_future(self.reporter())
        await asyncio.gather(*(self.slot(i, s["stream"], s["url"]) for i, s in enumerate(self.spec["slots"])))
        await reporter
        with self.out.open("a") as out:
            out.write(json.dumps({"final": True, **self.totals, "errors_after_end": self.errors}) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    asyncio.run(Clients(spec, Path(argv[1])).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
