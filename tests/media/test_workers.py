"""The media plane's one worker pool: lanes run in order on shared threads, a cap refuses past it,
and the work that was refused says so (HLS not segmented, recording not started, bridge refused)."""
from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from media import workers
from media.config import MediaConfig
from media.hls.from_hub import HlsConfig, HlsService
from media.hls.segmenter import HlsOptions
from media.hub.stream import Stream
from media.workers import WorkerPool, WorkersFull
from tests.support.flv_source import access_units, ffmpeg_flv


@pytest.fixture
def small_pool(monkeypatch):
    pool = WorkerPool(threads=2, max_lanes=2)
    monkeypatch.setattr(workers, "_pool", pool)
    yield pool
    pool.shutdown()


def test_sized_from_the_cores_and_the_environment(monkeypatch):
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 3)
    default = WorkerPool.from_env({})
    assert (default.threads, default.max_lanes) == (3 * workers.THREADS_PER_CORE, 3 * workers.LANES_PER_CORE)
    set_ = WorkerPool.from_env({"MEDIA_WORKERS": "5", "MEDIA_WORKER_LANES": "7"})
    assert (set_.threads, set_.max_lanes) == (5, 7)
    with pytest.raises(ValueError, match="MEDIA_WORKERS"):
        WorkerPool.from_env({"MEDIA_WORKERS": "many"})


async def test_lanes_share_the_threads_and_a_lane_runs_in_order(small_pool):
    a, b = small_pool.lane("a"), small_pool.lane("b")
    order: list[int] = []
    threads: set[str] = set()

    def step(i: int) -> int:
        threads.add(threading.current_thread().name)
        order.append(i)
        return i

    async def drive(lane, base):
        return [await lane.run(step, base + i) for i in range(20)]

    got = await asyncio.gather(drive(a, 0), drive(b, 100))
    assert got == [list(range(20)), list(range(100, 120))]
    assert [i for i in order if i < 100] == list(range(20))
    assert threads and all(name.startswith("media-worker") for name in threads) and len(threads) <= 2


def test_past_the_cap_a_lane_is_refused_with_the_setting_named(small_pool):
    first, second = small_pool.lane("hls one"), small_pool.lane("hls two")
    with pytest.raises(WorkersFull, match="MEDIA_WORKER_LANES=2.*hls three not started"):
        small_pool.lane("hls three")
    assert small_pool.refused == 1
    first.close()
    first.close()  # idempotent
    third = small_pool.lane("hls three")
    assert small_pool.lanes == 2
    second.close(), third.close()
    assert small_pool.lanes == 0


async def test_hls_past_the_cap_is_not_segmented_with_one_clear_line_and_the_others_go_on(
        small_pool, tmp_path, caplog):
    units = access_units(ffmpeg_flv(seconds=3))
    service = HlsService(HlsConfig(root=tmp_path, options=HlsOptions(1, 60)))
    streams = [Stream(f"room{i}", MediaConfig()) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="media.hls.from_hub"):
        for s in streams:
            service.stream_started(s)
        for unit in units:
            for s in streams:
                s.write(unit)
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
    assert service.active == 2 and small_pool.lanes == 2
    refused = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(refused) == 1 and "room2: not segmented" in refused[0] and "MEDIA_WORKER_LANES=2" in refused[0]
    for s in streams:
        s.close("publisher_left")
    for _ in range(200):
        if not service.active:
            break
        await asyncio.sleep(0.02)
    assert service.active == 0 and small_pool.lanes == 0  # every lane given back
    for public_id in ("room0", "room1"):
        playlist = (tmp_path / f"{public_id}.m3u8").read_text()
        assert playlist.count(".ts") >= 2 and playlist.rstrip().endswith("#EXT-X-ENDLIST")
    assert not (tmp_path / "room2.m3u8").exists()
