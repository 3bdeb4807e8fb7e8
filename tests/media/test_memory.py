"""Freed heap pages go back to the system once a trim interval, off the event loop."""
from __future__ import annotations

import asyncio
import threading

from media import runtime
from media.config import MediaConfig
from media.memory import release_free_memory
from media.runtime import start_media_plane
from tests.media.fakes import FakeControl


def test_malloc_trim_is_there_on_this_glibc_machine():
    assert release_free_memory() is True


async def test_the_stats_tick_trims_off_the_loop_once_an_interval(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime, "STATS_EVERY", 0.05)
    monkeypatch.setattr(runtime, "release_free_memory", lambda: calls.append(threading.current_thread()))
    plane = await start_media_plane(MediaConfig(bind="127.0.0.1", rtmp_port=0, http_port=0, memory_trim_every=0.2),
                                    FakeControl().plane())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while len(calls) < 2 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert len(calls) >= 2 and threading.main_thread() not in calls
    finally:
        await plane.stop()
