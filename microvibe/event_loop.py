"""The event loop the service runs on: uvloop's when it is installed and `UVLOOP` is not 0.

The media plane's cost with no viewer is mostly the loop's own wakeup path (docs/benchmarks.md);
uvloop runs it in C. It has to be the policy before Daphne creates its loop, which happens when
Django loads the `daphne` app (its apps module imports daphne.server, which installs Twisted's
asyncio reactor on `asyncio.new_event_loop()`), so manage.py calls `install` first thing.
"""
from __future__ import annotations

import asyncio
import os


def install() -> str:
    """Make uvloop the event loop policy unless `UVLOOP=0`; returns the loop's name."""
    if os.environ.get("UVLOOP", "1").strip().lower() in ("0", "false", "no", "off"):
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
