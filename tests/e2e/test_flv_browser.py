"""mpegts.js in headless Debian Chromium plays the room's HTTP-FLV on the watch page."""
from __future__ import annotations

import time

import pytest

from tests.support.browser import chromium
from tests.support.media import ffmpeg_publish, wait_until

from .test_rtmp_ingest import room_status, rtmp_publish_url, stop

pytestmark = pytest.mark.e2e


def test_mpegts_js_plays_flv_in_chromium(service, room):
    publisher = ffmpeg_publish(rtmp_publish_url(service, room))
    try:
        assert wait_until(lambda: room_status(service, room) == "live", 15)
        with chromium() as browser:
            browser.get(service.url(f"/live/{room['room']['room_id']}?player=flv"))
            video_time = "return document.getElementById('video').currentTime"
            assert wait_until(lambda: browser.execute_script(video_time) > 0.2, 15), \
                browser.get_log("browser")
            start, started_at = browser.execute_script(video_time), time.monotonic()
            time.sleep(5.5)
            advanced = browser.execute_script(video_time) - start
            assert advanced >= 4.5, (advanced, time.monotonic() - started_at)
            assert browser.execute_script("return window.playerErrors") == []
            size = browser.execute_script("const v = document.getElementById('video');"
                                          "return [v.videoWidth, v.videoHeight]")
            assert size == [640, 360]
    finally:
        stop(publisher)
