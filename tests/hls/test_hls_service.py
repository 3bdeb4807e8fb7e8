"""HlsService over real hub streams: one writer per stream, ENDLIST, reconnect, cleanup, and the
event loop's lag while several streams are segmented at once."""
from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import pytest

from media.config import MediaConfig
from media.hls.from_hub import HlsConfig, HlsService
from media.hls.segmenter import HlsOptions
from media.hub.stream import Stream
from tests.support.flv_source import access_units, ffmpeg_flv


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: these tests need no Django."""


def hls_service(root: Path, cleanup_after: float = 60.0) -> HlsService:
    return HlsService(HlsConfig(root=root, options=HlsOptions(2, 60), cleanup_after=cleanup_after))


async def publish(service: HlsService, public_id: str, units, *, realtime: float = 0.0) -> Stream:
    """A source writing units (paced at `realtime` x speed when > 0), then leaving."""
    stream = Stream(public_id, MediaConfig(hub_tick_ms=20))
    service.stream_started(stream)
    started = time.monotonic()
    for unit in units:
        if realtime:
            delay = unit.ms / 1000 / realtime - (time.monotonic() - started)
            if delay > 0:
                await asyncio.sleep(delay)
        stream.write(unit)
        if not realtime:
            await asyncio.sleep(0)
    stream.close("publisher_left")
    return stream


async def wait_idle(service: HlsService, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while service.active and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not service.active


async def test_endlist_reconnect_discontinuity_and_cleanup(tmp_path):
    units = access_units(ffmpeg_flv(seconds=6))
    service = hls_service(tmp_path, cleanup_after=0.5)
    await publish(service, "room", units)
    await wait_idle(service)
    playlist = (tmp_path / "room.m3u8").read_text()
    assert playlist.rstrip().endswith("#EXT-X-ENDLIST")
    first = [line for line in playlist.splitlines() if line.endswith(".ts")]

    await publish(service, "room", units)  # back within the cleanup window: same playlist, continued
    await wait_idle(service)
    playlist = (tmp_path / "room.m3u8").read_text()
    after = [line for line in playlist.splitlines() if line.endswith(".ts")]
    assert after[: len(first)] == first and len(after) > len(first)
    assert "#EXT-X-DISCONTINUITY" in playlist and playlist.count("#EXT-X-ENDLIST") == 1

    await asyncio.sleep(0.8)  # past HLS_CLEANUP_AFTER: everything removed
    assert not (tmp_path / "room.m3u8").exists() and not (tmp_path / "room").exists()
    await service.stop()


async def test_event_loop_stays_responsive_while_four_streams_are_segmented(tmp_path):
    units = access_units(ffmpeg_flv(seconds=8, size="1280x720", bframes=0))
    service = hls_service(tmp_path)
    lags: list[float] = []
    stop = asyncio.Event()

    async def monitor() -> None:
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - before - 0.005)

    watcher = asyncio.create_task(monitor())
    # four 720p streams at 4x real time, so the muxers work 16x one live stream
    await asyncio.gather(*(publish(service, f"s{i}", units, realtime=4) for i in range(4)))
    await wait_idle(service)
    stop.set()
    await watcher
    await service.stop()
    lags.sort()
    p99 = lags[int(len(lags) * 0.99)]
    assert p99 < 0.020, (statistics.median(lags), p99, lags[-1])
    for i in range(4):
        assert (tmp_path / f"s{i}.m3u8").read_text().rstrip().endswith("#EXT-X-ENDLIST")
