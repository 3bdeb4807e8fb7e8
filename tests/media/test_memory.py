"""Freed heap pages go back to the system once a trim interval, off the event loop."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

from media import runtime
from media.config import MediaConfig
from media.memory import release_free_memory
from media.runtime import start_media_plane
from tests.media.fakes import FakeControl


def test_malloc_trim_is_there_on_this_glibc_machine():
    assert release_free_memory() is True


# In a child, since the threshold is the process's: is a second 1 MiB block, malloc'd after the
# first was freed, its own mapping (IS_MMAPPED, bit 1 of the size word before the pointer)?
SECOND_BLOCK_MAPPED = """
import ctypes, sys
from media.memory import fix_mmap_threshold
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold(128 << 10)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def mapped(size):
    block = libc.malloc(size)
    flag = ctypes.c_size_t.from_address(block - ctypes.sizeof(ctypes.c_size_t)).value & 2
    libc.free(block)
    return bool(flag)
print(mapped(1 << 20), mapped(1 << 20), mapped(200 << 10))
"""


def second_block_mapped(mode: str) -> str:
    return subprocess.run([sys.executable, "-c", SECOND_BLOCK_MAPPED, mode], cwd=Path(__file__).parents[2],
                          capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def test_a_fixed_mmap_threshold_keeps_large_blocks_out_of_the_arenas():
    # glibc's default: freeing the first mapped block raises the threshold, the next ones come from the heap
    assert second_block_mapped("default") == "True False False"
    assert second_block_mapped("fixed") == "True True True"


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
