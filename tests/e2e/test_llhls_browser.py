"""LL-HLS in a browser: the watch page's hls.js (lowLatencyMode) plays the room's `play_urls.llhls`,
and how far the picture shown is behind the publisher's clock is read off the picture itself.

The publisher (ffmpeg, as OBS would push) burns its wall clock into each picture when it makes it:
20 boxes in the top left corner, white for a 1 bit, of the centiseconds since T0. The page reads
them back from every frame it presents (requestVideoFrameCallback, a canvas), so the figure is
glass to glass: encoding, RTMP, the hub, the CMAF parts, HTTP, hls.js's buffer, decoding.

A WebRTC-published room (an aiortc WHIP publisher: H.264 + Opus) plays the same way with its Opus
as it is, in fMP4: hls.js opens an `audio/mp4; codecs="opus"` source buffer and Chromium decodes it."""
from __future__ import annotations

import statistics
import time

import pytest

from tests.support.api import api, create_room, register
from tests.support.browser import chromium
from tests.support.clock import BITS, BOX, READ_CLOCK, clock_publisher
from tests.support.media import wait_until
from tests.support.procs import Service

from . import killable_publisher
from .test_rtmp_ingest import room_status, rtmp_publish_url, stop

pytestmark = pytest.mark.e2e

MAX_BEHIND = 2.5  # s, the bound for the median


@pytest.fixture(scope="module")
def service():
    with Service(env={"LLHLS_ENABLED": "1"}) as running:
        yield running


@pytest.fixture
def room(service, request):
    return create_room(service, register(service, request.node.name[:30]), title=request.node.name[:100])


def test_hls_js_low_latency_mode_plays_under_2_5_s_behind_the_publisher(service, room):
    public_id = room["room"]["room_id"]
    t0_us = int(time.time() * 1e6)
    publisher = clock_publisher(rtmp_publish_url(service, room), t0_us)
    try:
        assert wait_until(lambda: room_status(service, room) == "live", 15), service.log()[-2000:]
        urls = api(service, f"/api/v1/live/{public_id}")[1]["data"]["play_urls"]
        assert urls["llhls"] == f"http://127.0.0.1:{service.media_http_port}/hls/{public_id}/ll.m3u8", urls
        assert wait_until(lambda: _status(urls["llhls"]) == 200, 10)
        with chromium() as browser:
            browser.get(service.url(f"/live/{public_id}?player=hls"))
            video_time = "return document.getElementById('video').currentTime"
            assert wait_until(lambda: browser.execute_script(video_time) > 0.5, 20), browser.get_log("browser")
            mode = browser.execute_script(
                "const h = window.__hls; const d = h.levels[h.currentLevel >= 0 ? h.currentLevel : 0].details;"
                "return [h.config.lowLatencyMode, h.url, d ? d.partList && d.partList.length : 0,"
                " d && d.canBlockReload]")
            assert mode[0] is True and mode[1] == urls["llhls"] and mode[2] > 0 and mode[3] is True, mode
            browser.execute_script(READ_CLOCK, t0_us / 1000, BITS, BOX)
            time.sleep(3)  # hls.js settles on its target latency
            browser.execute_script("window.__behind = []")
            time.sleep(15)
            samples = browser.execute_script("return window.__behind")
            errors = browser.execute_script("return window.playerErrors")
        behind = [s for _, s in samples]
        assert errors == [], errors
        assert len(behind) >= 15 * 25, f"{len(behind)} frames presented in 15 s"
        # a misread clock would be far off (a wrong high bit is minutes): every frame reads sanely
        assert all(0 < s < 10 for s in behind), sorted(behind)[:3] + sorted(behind)[-3:]
        median = statistics.median(behind)
        p90 = statistics.quantiles(behind, n=10)[-1]
        print(f"LL-HLS in Chromium: {median:.2f} s behind the publisher (p90 {p90:.2f} s, {len(behind)} frames)")
        assert median < MAX_BEHIND, (median, p90)
    finally:
        stop(publisher)
        if publisher.stderr is not None:
            err = publisher.stderr.read().decode(errors="replace")
            assert "Error" not in err, err[-1500:]


# Before any page script: note the type of every MSE source buffer the player opens.
RECORD_SOURCE_BUFFERS = """
window.__sourceBuffers = [];
const add = MediaSource.prototype.addSourceBuffer;
MediaSource.prototype.addSourceBuffer = function (type) {
  window.__sourceBuffers.push(type);
  return add.call(this, type);
};
"""


def test_hls_js_plays_a_webrtc_room_with_its_opus_over_ll_hls(service, room):
    public_id = room["room"]["room_id"]
    publisher = killable_publisher.start(service, room)
    try:
        urls = api(service, f"/api/v1/live/{public_id}")[1]["data"]["play_urls"]
        assert wait_until(lambda: _status(urls["llhls"]) == 200, 15), service.log()[-2000:]
        with chromium() as browser:
            browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_SOURCE_BUFFERS})
            browser.get(service.url(f"/live/{public_id}?player=hls"))
            video = "const v = document.getElementById('video'); return [v.currentTime, v.webkitAudioDecodedByteCount]"
            assert wait_until(lambda: browser.execute_script(video)[0] > 0.5, 20), browser.get_log("browser")
            mode = browser.execute_script("const h = window.__hls; return [h.config.lowLatencyMode, h.url]")
            assert mode == [True, urls["llhls"]], mode
            start, audio_before = browser.execute_script(video)
            time.sleep(5)
            end, audio_after = browser.execute_script(video)
            buffers = browser.execute_script("return window.__sourceBuffers")
            errors = browser.execute_script("return window.playerErrors")
        assert errors == [], errors
        assert any("opus" in b for b in buffers) and any("avc1" in b for b in buffers), buffers
        assert end - start > 4.5, (start, end)  # plays on at the live pace
        assert audio_after > audio_before, (audio_before, audio_after)  # Chromium decodes the Opus
        assert f"llhls {public_id}: stopped" not in service.log(), service.log()[-2000:]
    finally:
        stop(publisher)


def _status(url: str) -> int:
    from tests.support.hls import get

    return get(url)[0]
