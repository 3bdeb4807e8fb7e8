"""TURN through coturn (`use-auth-secret`): the ice-servers API hands out time-limited REST-API
credentials, and Chromium with `iceTransportPolicy: "relay"` publishes by WHIP and plays by WHEP
through coturn; coturn refuses a wrong password and an expired credential. coturn, the service and
Chromium run in a network namespace that has only loopback (tests/e2e/turn_netns.py)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys

import pytest

from tests.support.procs import ROOT, require_tool

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def turn_run() -> dict:
    """One namespace run for all the assertions below (it takes ~20 s)."""
    for tool in ("/usr/bin/turnserver", "/usr/bin/chromium", "/usr/bin/chromedriver"):
        require_tool(tool)  # missing: a loud failure, never a skip
    if os.geteuid() != 0:
        pytest.fail("the TURN test needs root for `unshare --net` (loopback-only namespace)")
    # The suite's PostgreSQL/Redis (CI) are out of the namespace's reach: the service uses its embedded default.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    run = subprocess.run([require_tool("unshare"), "--net", sys.executable, "-m", "tests.e2e.turn_netns"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def check_credential(server: dict, secret: str, ttl: int, asked_at: float) -> None:
    """coturn REST-API shape: username "<expiry>:<user>" with expiry ~TTL from now, password its HMAC."""
    expiry, _, user = server["username"].partition(":")
    assert user == "anonymous", server
    assert abs(int(expiry) - (asked_at + ttl)) < 30, (server, asked_at, ttl)
    digest = hmac.new(secret.encode(), server["username"].encode(), hashlib.sha1).digest()
    assert server["credential"] == base64.b64encode(digest).decode(), server


def test_ice_servers_hand_out_time_limited_turn_credentials(turn_run):
    r = turn_run
    for servers in (r["ice_servers"], r["browser_ice_servers"]):
        turn = [server for server in servers if "username" in server]
        assert len(turn) == 1 and turn[0]["urls"] == [r["turn_url"]], servers
        check_credential(turn[0], r["secret"], r["ttl"], r["asked_at"])


@pytest.mark.parametrize("peer", ["publisher", "player"])
def test_relay_only_peer_connects_through_coturn(turn_run, peer):
    r = turn_run
    session = r["publish" if peer == "publisher" else "play"]
    assert session["status"] == 201 and session["state"] == "connected", session
    assert set(session["gathered"]["types"]) == {"relay"}, session  # the policy left nothing but relay
    for stats in r[f"{peer}_stats"].values():
        # The path in use: a coturn relay on our side, the SFU's own 127.0.0.1 host candidate on the other.
        assert stats["local"]["type"] == "relay" and stats["local"]["url"] == r["turn_url"], stats
        assert stats["remote"]["type"] == "host" and stats["remote"]["address"] == "127.0.0.1", stats
    assert r["rtc_stats"]["publishers"] == 1 and r["rtc_stats"]["subscribers"] == 1, r["rtc_stats"]


def test_player_decodes_the_relayed_camera(turn_run):
    publisher, player = turn_run["publisher_stats"], turn_run["player_stats"]
    seconds = (player["after"]["ms"] - player["before"]["ms"]) / 1000
    camera = publisher["after"]["camera_frames"] - publisher["before"]["camera_frames"]
    decoded = player["after"]["frames_decoded"] - player["before"]["frames_decoded"]
    assert seconds > 4 and camera >= 20, (publisher, player)  # a window with frames in it
    assert decoded >= 0.6 * camera, (camera, decoded, player)


def test_coturn_relayed_for_the_api_credential(turn_run):
    granted = turn_run["turn_log"].get("anonymous", {})
    assert granted.get("ALLOCATE", 0) >= 2 and granted.get("CHANNEL_BIND", 0) >= 2, turn_run["turn_log"]
    assert "refused" not in granted, turn_run["turn_log"]


@pytest.mark.parametrize("bad", ["wrong-password", "expired"])
def test_coturn_refuses_a_bad_credential(turn_run, bad):
    attempt = turn_run["refused"][bad]
    assert attempt["gathered"]["types"] == [] and attempt["offer_candidates"] == 0, attempt
    assert 401 in attempt["gathered"]["errors"], attempt  # coturn said Unauthorized, not "unreachable"
    assert attempt["state"] != "connected", attempt
    assert set(turn_run["turn_log"].get(bad, {})) == {"refused"}, turn_run["turn_log"]  # and nothing granted
