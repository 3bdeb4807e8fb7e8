"""The service's event loop (microvibe/event_loop.py): uvloop under Daphne's Twisted reactor."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run in a child: installing Twisted's reactor is for the whole process.
COUNT_REACTOR_TURNS = """
import asyncio
from microvibe import event_loop
print(event_loop.install())
from twisted.internet import asyncioreactor
asyncioreactor.install(asyncio.new_event_loop())
from twisted.internet import reactor
turns = [0]
on_timer = reactor._onTimer
def counted():
    turns[0] += 1
    on_timer()
reactor._onTimer = counted
for i in range(10):
    reactor.callLater(0.0105 * (i + 1), lambda: None)  # due between two of uvloop's milliseconds
reactor.callLater(0.2, reactor.stop)
reactor.run()
print(turns[0])
"""


def test_twisted_timers_on_uvloop_fire_once_not_in_a_spin():
    out = subprocess.run([sys.executable, "-c", COUNT_REACTOR_TURNS], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=30).stdout.split()
    assert out[0] == "uvloop"
    # 11 calls, one turn each (a turn may run two calls due together). Without the 1 ms margin
    # uvloop ran each timer early and the reactor turned about 20 times per call.
    assert int(out[1]) <= 12, out
