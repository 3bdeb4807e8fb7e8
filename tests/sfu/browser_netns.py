"""Run inside a fresh network namespace (`unshare --net`): bring lo up, start the service, and
- `publish` (default): publish the fake camera from one Chromium's publish page and play it on a
  second Chromium's watch page; `publish-hls`: the same, the second Chromium playing HLS (hls.js);
- `rtmp`: ffmpeg pushes an OBS-style RTMP stream (x264 High, AAC) and Chromium plays the room's
  watch page, which tries WebRTC first: H.264 from the hub, the AAC converted to Opus;
- `rtmp-bframes`: the same with x264's default B-frames (as OBS sends them), which the server
  re-encodes without B-frames for WebRTC; watched for 20 s.
Prints one JSON line with what was seen; tests/sfu/test_browser.py runs it."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from selenium.webdriver.common.by import By

from tests.support.api import create_room, register
from tests.support.browser import WEBRTC_FLAGS, chromium
from tests.support.procs import Service


def wait_for(driver, script: str, timeout: float):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    return value


# Frames the page presented over `seconds` (requestVideoFrameCallback), and the longest gap between two.
FRAME_COUNT = """
const done = arguments[arguments.length - 1];
const seconds = arguments[0];
const video = document.getElementById('video');
const times = [];
const start = performance.now();
function tick(now) {
  times.push(now);
  if (now - start < seconds * 1000) video.requestVideoFrameCallback(tick);
  else {
    let gap = 0;
    for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i] - times[i - 1]);
    done({frames: times.length, seconds: (times[times.length - 1] - times[0]) / 1000, max_gap_ms: gap});
  }
}
video.requestVideoFrameCallback(tick);
"""

INBOUND_CODECS = """
const done = arguments[arguments.length - 1];
window.__pc.getStats().then((report) => {
  const codecs = {};
  report.forEach((s) => { if (s.type === 'codec') codecs[s.id] = s; });
  const out = [];
  report.forEach((s) => {
    const codec = codecs[s.codecId];
    if (s.type === 'inbound-rtp' && codec) out.push(s.kind + ' ' + codec.mimeType + ' ' + (codec.sdpFmtpLine || ''));
  });
  done(out);
});
"""

# The video receiver's freezes (WebRTC stats: a frame shown much later than the average frame gap).
VIDEO_STATS = """
const done = arguments[arguments.length - 1];
window.__pc.getStats().then((report) => {
  let video = null;
  report.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') video = s; });
  done(video && {freezes: video.freezeCount || 0, frames_decoded: video.framesDecoded || 0,
                 frames_dropped: video.framesDropped || 0, ms: video.timestamp});
});
"""

# The audio receiver's counters: energy, samples received and concealed (jitter buffer underruns).
AUDIO_STATS = """
const done = arguments[arguments.length - 1];
window.__pc.getStats().then((report) => {
  let audio = null;
  report.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') audio = s; });
  done(audio && {energy: audio.totalAudioEnergy || 0, samples: audio.totalSamplesReceived || 0,
                 concealed: audio.concealedSamples || 0, packets: audio.packetsReceived || 0});
});
"""


def open_watch_page(viewer, service, public_id: str, result: dict) -> None:
    """Open the room's watch page; note how long the first picture took and its size."""
    started = time.monotonic()
    viewer.get(service.url(f"/live/{public_id}"))
    size = wait_for(viewer, "const v = document.getElementById('video');"
                    "return v.videoWidth > 0 && v.currentTime > 0 && [v.videoWidth, v.videoHeight]", 20)
    result["first_picture_s"] = round(time.monotonic() - started, 2)
    result["video_size"] = size


def watch_rtmp(bframes: int | None = None, seconds: float = 10) -> dict:
    from tests.support.media import ffmpeg_publish

    result: dict = {}
    with Service() as service:
        token = register(service, "browser-rtmp-owner")
        room = create_room(service, token, "rtmp to webrtc")
        public_id, key = room["room"]["room_id"], room["stream_key"]
        publisher = ffmpeg_publish(f"rtmp://127.0.0.1:{service.rtmp_port}/live/{key}", bframes=bframes)
        try:
            time.sleep(2)
            with chromium(WEBRTC_FLAGS, mute_audio=False) as viewer:
                viewer.set_script_timeout(30)
                open_watch_page(viewer, service, public_id, result)
                viewer.execute_script("document.getElementById('video').muted = false")  # as a viewer's click
                viewer.set_script_timeout(seconds + 20)
                video_before = viewer.execute_async_script(VIDEO_STATS)
                result["playback"] = viewer.execute_async_script(FRAME_COUNT, seconds)
                video_after = viewer.execute_async_script(VIDEO_STATS)
                result["video"] = {k: video_after[k] - video_before[k] for k in video_after}
                result["player_state"] = viewer.execute_script(
                    "return document.getElementById('player-state').textContent")
                result["notes"] = viewer.execute_script("return document.getElementById('stream-notes').textContent")
                result["player_errors"] = viewer.execute_script("return window.playerErrors")
                result["inbound"] = viewer.execute_async_script(INBOUND_CODECS)
                before = viewer.execute_async_script(AUDIO_STATS)
                time.sleep(5)
                after = viewer.execute_async_script(AUDIO_STATS)
                result["audio"] = {"before": before, "after": after}
        finally:
            publisher.terminate()
            publisher.wait(10)
        result["service_log_tail"] = service.log()[-1500:]
    return result


def main() -> dict:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if sys.argv[1:] == ["rtmp"]:
        return watch_rtmp()
    if sys.argv[1:] == ["rtmp-bframes"]:
        return watch_rtmp(bframes=3, seconds=20)
    if sys.argv[1:] == ["publish-hls"]:
        return publish_and_watch("hls")
    return publish_and_watch(None)


def publish_and_watch(player: str | None) -> dict:
    """One Chromium publishes its fake camera on the publish page; another plays the room's watch
    page, over WebRTC (the page's first choice) or with `player` (?player=hls: hls.js)."""
    result: dict = {}
    with Service(media=player is not None) as service:
        token = register(service, "browser-owner")
        room = create_room(service, token, "browser room")
        public_id, key = room["room"]["room_id"], room["stream_key"]
        with chromium(WEBRTC_FLAGS) as publisher, chromium(WEBRTC_FLAGS) as viewer:
            publisher.get(service.url(f"/live/{public_id}/publish"))
            publisher.find_element(By.ID, "stream-key").send_keys(key)
            publisher.find_element(By.ID, "start").click()
            result["publish_state"] = wait_for(publisher, "return window.publishState === 'live' && 'live'", 20) \
                or publisher.execute_script("return window.publishState")
            result["publish_url"] = publisher.current_url
            if player is None:
                open_watch_page(viewer, service, public_id, result)
            else:
                viewer.get(service.url(f"/live/{public_id}?player={player}"))
                result["video_size"] = wait_for(
                    viewer, "const v = document.getElementById('video');"
                    "return v.videoWidth > 0 && v.currentTime > 0 && [v.videoWidth, v.videoHeight]", 40)
            t0 = viewer.execute_script("return document.getElementById('video').currentTime")
            time.sleep(4 if player else 2)
            t1 = viewer.execute_script("return document.getElementById('video').currentTime")
            result["advanced_s"] = round(t1 - t0, 2)
            result["audio_bytes"] = viewer.execute_script(
                "return document.getElementById('video').webkitAudioDecodedByteCount")
            result["player_state"] = viewer.execute_script("return document.getElementById('player-state').textContent")
            result["player_errors"] = viewer.execute_script("return window.playerErrors")
            result["stats"] = json.loads(service.get("/api/v1/rtc/stats")[1])["data"]
            result["media"] = json.loads(service.get(f"/api/v1/live/{public_id}")[1])["data"].get("media")
            result["service_log_tail"] = service.log()[-1500:]
    return result

if __name__ == "__main__":
    print(json.dumps(main()), file=sys.stdout, flush=True)
