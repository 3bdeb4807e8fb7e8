"""A subscriber killed mid-call: the others go on unaffected and the server frees it (counted)."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

from tests.support.procs import ROOT

from .clients import PatternVideo, http_async, whep_subscribe, whip_publish


def _stats(service) -> dict:
    return json.loads(service.get("/api/v1/rtc/stats")[1])["data"]


async def test_killed_subscriber_is_freed(service, room):
    public_id, key = room["room"]["room_id"], room["stream_key"]
    base = service.url("")
    publisher, resource = await whip_publish(base, public_id, key, [PatternVideo(320, 180, 30)])
    pcs = []
    victim = None
    try:
        stayers = []
        for _ in range(2):
            pc, _, collectors = await whep_subscribe(base, public_id, kinds=("video",))
            pcs.append(pc)
            stayers.append(await asyncio.wait_for(collectors["video"], 10))
        victim = subprocess.Popen([sys.executable, "-m", "tests.sfu.killable_viewer", base, public_id], cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True)
        line = await asyncio.get_running_loop().run_in_executor(None, victim.stdout.readline)
        assert line.strip() == "receiving"
        before = _stats(service)
        assert before["subscribers"] == 3
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)
        killed_at = time.monotonic()
        freed = None
        while time.monotonic() - killed_at < 12:
            now = _stats(service)
            if now["subscribers"] == 2:
                freed = time.monotonic() - killed_at
                break
            await asyncio.sleep(0.25)
        assert freed is not None, f"the dead subscriber was not freed: {_stats(service)}"
        counters = _stats(service)["counters"]
        assert counters.get("subscribers_timed_out", 0) >= before["counters"].get("subscribers_timed_out", 0) + 1
        # the others kept receiving at full rate through the kill
        for collector in stayers:
            rate = collector.rate(killed_at)
            assert rate > 24, f"a remaining subscriber fell to {rate:.1f} fps"
            assert collector.missing(3000, since=killed_at) == 0, "a remaining subscriber lost pictures"
    finally:
        if victim and victim.poll() is None:
            victim.kill()
        for pc in pcs:
            await pc.close()
        await http_async("DELETE", resource)
        await publisher.close()
