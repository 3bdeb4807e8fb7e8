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
    _twisted_timers_not_early()
    return "uvloop"


def _twisted_timers_not_early() -> None:
    """Make Twisted's asyncio reactor schedule its timer 1 ms after its next call is due.

    uvloop's timers count whole milliseconds and run a call due in less than one at once. The
    reactor then finds nothing due yet and schedules again: about 20 idle turns of the loop before
    each of Daphne's timers (a few a second), about 19 loop turns a second in all. `timeout()`
    is what both its rescheduling and `callLater` add to the loop's time.
    """
    from twisted.internet import asyncioreactor

    reactor_class = asyncioreactor.AsyncioSelectorReactor
    if getattr(reactor_class, "_microvibe_not_early", False):
        return
    exact = reactor_class.timeout

    def timeout(self) -> float | None:
        due = exact(self)
        return None if due is None else due + 0.001

    reactor_class.timeout = timeout
    reactor_class._microvibe_not_early = True
