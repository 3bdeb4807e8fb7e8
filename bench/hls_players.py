"""HLS players that load a live stream as hls.js does, light enough for 50-100 in one process.

The API, imported by benches and soak tests (keep it stable):

    stats = PlayerStats()
    await hls_player("http://host:port/hls/room.m3u8", stop, stats)   # until stop is set

A player, on one keep-alive HTTP/1.1 connection (asyncio streams; a new one if the server closes
it): GETs the playlist; a multivariant playlist (MicroVibe's `/hls/{id}.m3u8` answers one whose
variant carries the player's `?ctx=`) leads to its first variant's media playlist; 3xx redirects
are followed. It starts at the live edge, the last 3 segments (hls.js' liveSyncDurationCount=3),
GETs each new segment once, in order, and reloads the media playlist a target duration after the
previous load, half of one when the playlist had not changed (RFC 8216 6.3.4, as hls.js does).
Segment bodies are counted and dropped. A failed request is noted in `stats.errors` and retried
after a second; `#EXT-X-ENDLIST`, a 403 of the playlist (dropped by staff) or, once it has played,
PLAYLIST_RETRIES 404s in a row (the stream gone) end the player, as hls.js gives up.

`python -m bench.hls_players URL --count N --t0 T --t1 T --out FILE` runs N players in this
process (bench/hls_serve.py spreads them over processes) and writes, per player, what it did in
the window [t0, t1] (CLOCK_MONOTONIC) and in all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

READ_SIZE = 1 << 18
REQUEST_TIMEOUT = 20.0  # s for a whole response (hls.js' fragment load timeouts are of this order)
LIVE_EDGE_SEGMENTS = 3  # hls.js liveSyncDurationCount
MAX_REDIRECTS = 3
PLAYLIST_RETRIES = 4  # hls.js levelLoadingMaxRetry


S = TypeVar("S")  # a player's figures


@dataclass
class PlayerStats:
    segments: int = 0  # segments fetched (200, whole body)
    bytes: int = 0  # segment body bytes
    fetch_times: list[float] = field(default_factory=list)  # s per segment GET: request to last byte
    playlist_fetches: int = 0  # playlist GETs answered (any status)
    errors: list[str] = field(default_factory=list)


@dataclass
class Segment:
    seq: int
    uri: str


@dataclass
class Playlist:
    target: float = 2.0
    segments: list[Segment] = field(default_factory=list)
    variant: str | None = None  # a multivariant playlist's first variant URI
    ended: bool = False


def parse_playlist(text: str) -> Playlist:
    pl, seq, variant_next = Playlist(), 0, False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith("#EXT-X-TARGETDURATION:"):
                pl.target = float(line.split(":", 1)[1])
            elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                seq = int(line.split(":", 1)[1])
            elif line.startswith("#EXT-X-STREAM-INF"):
                variant_next = True
            elif line.startswith("#EXT-X-ENDLIST"):
                pl.ended = True
            continue
        if variant_next:
            pl.variant = pl.variant or line
            variant_next = False
        else:
            pl.segments.append(Segment(seq, line))
            seq += 1
    return pl


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection (reopened to another host:port or after a close)."""

    def __init__(self) -> None:
        self.netloc = ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, url: str, keep_body: bool) -> tuple[int, dict[str, str], bytes, int]:
        """(status, headers, body if keep_body, body length) of a GET; a request on a kept-alive
        connection the server had closed is sent again once, on a new one."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in (0, 1):
            fresh = await self._open(parts.netloc)
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    return await self._exchange(parts.netloc, target, keep_body)
            except (ConnectionError, asyncio.IncompleteReadError) as error:
                self.close()
                if fresh or attempt:
                    raise HttpError(f"{type(error).__name__}: {error}") from None
            except TimeoutError:
                self.close()
                raise HttpError(f"no whole response in {REQUEST_TIMEOUT:g} s") from None
            except (ValueError, IndexError, asyncio.LimitOverrunError) as error:
                self.close()
                raise HttpError(f"bad response: {error!r}") from None
        raise AssertionError("unreachable")

    async def _open(self, netloc: str) -> bool:
        if self.writer is not None and self.netloc == netloc and not self.writer.is_closing():
            return False
        self.close()
        host, _, port = netloc.rpartition(":")
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(host or netloc, int(port) if host else 80, limit=READ_SIZE), REQUEST_TIMEOUT)
        except (OSError, TimeoutError) as error:
            raise HttpError(f"connect: {type(error).__name__}: {error}") from None
        self.netloc = netloc
        return True

    async def _exchange(self, netloc: str, target: str, keep_body: bool) -> tuple[int, dict[str, str], bytes, int]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {netloc}\r\nUser-Agent: microvibe-bench-hls\r\n\r\n"
                          .encode())
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body, size = await self._chunked(keep_body)
        elif "content-length" in headers:
            body, size = await self._body(int(headers["content-length"]), keep_body)
        else:  # delimited by the close
            body = await self.reader.read()
            size, headers["connection"] = len(body), "close"
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body if keep_body else b"", size

    async def _body(self, size: int, keep: bool) -> tuple[bytes, int]:
        assert self.reader is not None
        if keep:
            return await self.reader.readexactly(size), size
        left = size
        while left:
            data = await self.reader.read(min(left, READ_SIZE))
            if not data:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(data)
        return b"", size

    async def _chunked(self, keep: bool) -> tuple[bytes, int]:
        assert self.reader is not None
        parts, total = [], 0
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # no trailers expected
                return b"".join(parts), total
            body, _ = await self._body(size, keep)
            parts.append(body)
            total += size
            await self.reader.readexactly(2)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


async def _playlist(conn: Connection, url: str, stats: PlayerStats) -> tuple[str, int, Playlist | None]:
    """(URL it came from, status, playlist if 200), following redirects and a multivariant's variant."""
    for _ in range(MAX_REDIRECTS + 2):
        status, headers, body, _ = await conn.get(url, keep_body=True)
        stats.playlist_fetches += 1
        if status in (301, 302, 303, 307, 308) and "location" in headers:
            url = urljoin(url, headers["location"])
            continue
        if status != 200:
            return url, status, None
        pl = parse_playlist(body.decode("utf-8", "replace"))
        if pl.variant is None:
            return url, status, pl
        url = urljoin(url, pl.variant)
    raise HttpError("too many redirects or variants")


async def hls_player(playlist_url: str, stop: asyncio.Event, stats: PlayerStats) -> None:
    """Play `playlist_url` live until `stop` is set (or the playlist ends); see the module doc."""
    conn, url, next_seq, played, misses = Connection(), playlist_url, None, False, 0
    try:
        while not stop.is_set():
            loaded_at = time.monotonic()
            try:
                url, status, pl = await _playlist(conn, url, stats)
            except HttpError as error:
                stats.errors.append(f"playlist: {error}")
                await _sleep(stop, 1.0)
                continue
            if pl is None:
                misses += status == 404 and played
                if status != 404 or played:  # a 404 before the first segment is the stream starting
                    stats.errors.append(f"playlist: HTTP {status}")
                if status == 403 or misses >= PLAYLIST_RETRIES:
                    return
                await _sleep(stop, 1.0)
                continue
            misses = 0
            last = pl.segments[-1].seq if pl.segments else None
            if next_seq is None and pl.segments:
                next_seq = pl.segments[max(0, len(pl.segments) - LIVE_EDGE_SEGMENTS)].seq
            changed = last is not None and next_seq is not None and last >= next_seq
            for segment in pl.segments:
                if stop.is_set():
                    return
                if next_seq is not None and segment.seq >= next_seq:
                    await _segment(conn, urljoin(url, segment.uri), stats)
                    next_seq, played = segment.seq + 1, True
            if pl.ended:
                return
            await _sleep(stop, loaded_at + (pl.target if changed else pl.target / 2) - time.monotonic())
    finally:
        conn.close()


async def _segment(conn: Connection, url: str, stats: PlayerStats) -> None:
    started = time.monotonic()
    try:
        status, _, _, size = await conn.get(url, keep_body=False)
    except HttpError as error:
        stats.errors.append(f"segment: {error}")
        return
    if status != 200:
        stats.errors.append(f"segment: HTTP {status}")
        return
    stats.fetch_times.append(time.monotonic() - started)
    stats.segments += 1
    stats.bytes += size


# ------------------------------------------------------------------------------ a reader process


def _mark(stats: PlayerStats) -> dict:
    return {"segments": stats.segments, "bytes": stats.bytes, "fetches": len(stats.fetch_times),
            "playlist_fetches": stats.playlist_fetches, "errors": len(stats.errors)}


def window(stats: PlayerStats, start: dict, end: dict) -> dict:
    """What a player did between two `_mark`s."""
    return {"segments": end["segments"] - start["segments"], "bytes": end["bytes"] - start["bytes"],
            "playlist_fetches": end["playlist_fetches"] - start["playlist_fetches"],
            "fetch_times": stats.fetch_times[start["fetches"]:end["fetches"]],
            "errors": stats.errors[start["errors"]:end["errors"]]}


async def run_players(play: Callable[[S, asyncio.Event], Awaitable[None]], stats: list[S], mark: Callable[[S], dict],
                      first: int, total: int, spread: float, t0: float, t1: float) -> list[tuple[S, dict, dict]]:
    """`play` each of `stats`' players, the k-th of `total` starting k * spread / total s from now (so
    that they do not all ask at once); each one's (stats, mark at t0, mark at t1), a crash noted in
    its errors. Shared by bench/llhls.py's LL players."""
    stop = asyncio.Event()

    async def one(k: int, s: S) -> None:
        await _sleep(stop, (first + k) * spread / max(total, 1))
        if not stop.is_set():
            await play(s, stop)

    tasks = [asyncio.create_task(one(k, s)) for k, s in enumerate(stats)]
    await asyncio.sleep(max(0.0, t0 - time.monotonic()))
    start = [mark(s) for s in stats]
    await asyncio.sleep(max(0.0, t1 - time.monotonic()))
    end = [mark(s) for s in stats]
    stop.set()
    done, pending = await asyncio.wait(tasks, timeout=5)
    for task in pending:
        task.cancel()
    for s, task in zip(stats, tasks, strict=True):
        if task in done and not task.cancelled() and task.exception() is not None:
            s.errors.append(f"crashed: {task.exception()!r}")
    return list(zip(stats, start, end, strict=True))


async def run(url: str, count: int, first: int, total: int, spread: float, t0: float, t1: float) -> list[dict]:
    """`count` MPEG-TS players (`run_players`); each one's figures over [t0, t1] and in all."""
    ran = await run_players(lambda s, stop: hls_player(url, stop, s), [PlayerStats() for _ in range(count)], _mark,
                            first, total, spread, t0, t1)
    return [{"index": first + k, "window": window(s, a, b), "total": {**_mark(s), "errors": s.errors[:20]}}
            for k, (s, a, b) in enumerate(ran)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the stream's playlist (multivariant or media)")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--total", type=int, default=0, help="players over all processes (default: count)")
    parser.add_argument("--spread", type=float, default=2.0, help="s over which all the players start")
    parser.add_argument("--t0", type=float, required=True)
    parser.add_argument("--t1", type=float, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results = asyncio.run(run(args.url, args.count, args.first_index, args.total or args.count, args.spread,
                              args.t0, args.t1))
    with open(args.out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
