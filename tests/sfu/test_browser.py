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


def in_loopback_namespace(*args: str) -> dict:
    """Run tests/sfu/browser_netns.py (service + Chromium) in a namespace with only `lo`."""
    require_tool("/usr/bin/chromium")
    require_tool("/usr/bin/chromedriver")
    if os.geteuid() != 0:  # `make test` runs as root (it installs the test tools too)
        pytest.fail("the browser WebRTC test needs root for `unshare --net` (loopback-only namespace)")
    # The namespace has only its own loopback: the suite's PostgreSQL/Redis (CI) are out of reach,
    # so the service inside runs on its embedded default.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    run = subprocess.run([require_tool("unshare"), "--net", sys.executable, "-m", "tests.sfu.browser_netns", *args],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_chromium_watches_an_rtmp_stream_over_webrtc():
    """OBS-style RTMP (x264 High, no B-frames, AAC) -> the watch page's WebRTC player: H.264 plays at
    the source's 30 fps, labelled with a profile Chromium offers (it has no High, the page says so),
    and the AAC arrives as Opus with sound in it (getStats' totalAudioEnergy)."""
    result = in_loopback_namespace("rtmp")
    assert result["player_state"] == "playing webrtc", result
    assert result["video_size"] == [640, 360], result
    assert result["first_picture_s"] < 8, result
    playback = result["playback"]
    fps = (playback["frames"] - 1) / playback["seconds"]
    assert fps >= 27, result
    assert playback["max_gap_ms"] < 500, result
    assert any(line.startswith("video video/H264") for line in result["inbound"]), result
    assert "labelled 42e01f" in result["notes"], result
    assert any(line.startswith("audio audio/opus") for line in result["inbound"]), result
    before, after = result["audio"]["before"], result["audio"]["after"]
    assert after["energy"] > before["energy"], result  # sound, not silence
    received = after["samples"] - before["samples"]
    assert received > 0.9 * 5 * 48000, result  # 5 s of 48 kHz audio kept coming
    assert after["concealed"] - before["concealed"] < 0.02 * received, result  # no gaps the receiver filled
    assert result["player_errors"] == [], result


def test_chromium_watches_an_obs_style_stream_with_b_frames_over_webrtc():
    """x264 with its default B-frames (OBS's default) -> WebRTC, re-encoded once for the stream
    without them: 20 s at >= 29 fps with no frozen frame, sound in the Opus, and the page says why."""
    result = in_loopback_namespace("rtmp-bframes")
    assert result["player_state"] == "playing webrtc", result
    assert result["video_size"] == [640, 360], result
    # The receiver's decoded frames over the 20 s (its own stats clock): the rate the stream plays at;
    # requestVideoFrameCallback on a 2-core machine misses some presentations, so it only bounds gaps.
    video, playback = result["video"], result["playback"]
    seconds = video["ms"] / 1000
    assert seconds >= 19 and video["frames_decoded"] / seconds >= 29, result
    assert video["frames_dropped"] == 0 and video["freezes"] == 0, result  # no frozen frame
    assert playback["max_gap_ms"] < 150, result
    assert "B-frames" in result["notes"], result
    before, after = result["audio"]["before"], result["audio"]["after"]
    assert after["energy"] > before["energy"], result
    received = after["samples"] - before["samples"]
    assert received > 0.9 * 5 * 48000, result
    assert result["player_errors"] == [], result


def test_chromium_publishes_and_another_watches():
    result = in_loopback_namespace()
    assert result["publish_state"] == "live", result
    assert "key" not in result["publish_url"].lower().split("/publish")[-1]
    assert result["video_size"] and result["video_size"][0] > 0, result
    assert result["advanced_s"] > 1.0, result
    assert result["player_state"] == "playing webrtc", result
    assert result["stats"]["publishers"] == 1 and result["stats"]["subscribers"] == 1, result


def test_chromium_publishes_and_another_chromium_watches_hls():
    """The publish page's fake camera and microphone -> H.264 (the WHIP answer prefers it) + Opus ->
    the watch page's hls.js: H.264 passes, the Opus is converted to AAC once for the stream, on
    demand (the first playlist request starts it); the picture moves and the audio decodes."""
    result = in_loopback_namespace("publish-hls")
    assert result["publish_state"] == "live", result
    assert result["player_state"] == "playing hls", result
    assert result["video_size"] == [640, 360], result
    assert result["advanced_s"] > 3.0, result
    assert result["audio_bytes"] > 0, result
    media = result["media"]
    assert media["tracks"] == {"video": "h264", "audio": "opus"}, media
    assert [(t["for"], t["kind"], t["from"], t["to"]) for t in media["transcodes"]] == [
        ("HLS/HTTP-FLV/RTMP", "audio", "opus", "aac")], media
    assert result["player_errors"] == [], result
