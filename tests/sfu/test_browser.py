"""Headless Chromium publishes its fake camera on the publish page; another Chromium plays it over WebRTC
on the watch page. Both run with the service in a network namespace that has only loopback."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.procs import ROOT, require_tool

pytestmark = pytest.mark.e2e


def test_chromium_publishes_and_another_watches():
    require_tool("/usr/bin/chromium")
    require_tool("/usr/bin/chromedriver")
    if os.geteuid() != 0:  # `make test` runs as root (it installs the test tools too)
        pytest.fail("the browser WebRTC test needs root for `unshare --net` (loopback-only namespace)")
    # The namespace has only its own loopback: the suite's PostgreSQL/Redis (CI) are out of reach,
    # so the service inside runs on its embedded default.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    run = subprocess.run([require_tool("unshare"), "--net", sys.executable, "-m", "tests.sfu.browser_netns"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["publish_state"] == "live", result
    assert "key" not in result["publish_url"].lower().split("/publish")[-1]
    assert result["video_size"] and result["video_size"][0] > 0, result
    assert result["advanced_s"] > 1.0, result
    assert result["player_state"] == "playing webrtc", result
    assert result["stats"]["publishers"] == 1 and result["stats"]["subscribers"] == 1, result
