"""test_serving.py runs on both event loops the service may run on (microvibe/event_loop.py):
asyncio's (a full socket waits in loop.sendfile) and uvloop's (which has no loop.sendfile: pieces
read and written); the other modules on asyncio's. `plane`: a media plane with LL-HLS on (MPEG-TS
HLS off), for the LL route's tests."""
from __future__ import annotations

import asyncio

import pytest

from media.config import MediaConfig
from media.runtime import start_media_plane
from tests.media.fakes import FakeControl


@pytest.fixture
async def plane():
    config = MediaConfig(bind="127.0.0.1", rtmp_port=0, http_port=0, hls_enabled=False, llhls_enabled=True)
    plane = await start_media_plane(config, FakeControl().plane(), register_control=False)
    try:
        yield plane
    finally:
        await plane.stop()


def pytest_asyncio_loop_factories(config, item):
    factories = {"asyncio": asyncio.new_event_loop}
    if item.module.__name__.endswith("test_serving"):
        try:
            import uvloop
        except ImportError:
            pass
        else:
            factories["uvloop"] = uvloop.new_event_loop
    return factories
