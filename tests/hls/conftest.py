"""test_serving.py runs on both event loops the service may run on (microvibe/event_loop.py):
asyncio's (a full socket waits in loop.sendfile) and uvloop's (which has no loop.sendfile: pieces
read and written); the other modules on asyncio's."""
from __future__ import annotations

import asyncio


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
