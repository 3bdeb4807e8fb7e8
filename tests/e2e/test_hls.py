"""HLS from a live RTMP push, read back by ffprobe/ffmpeg and played by hls.js in Chromium."""
from __future__ import annotations

import subprocess
import time
import urllib.request

import pytest

from tests.support.browser import chromium
from tests.support.hls import media_playlist
from tests.support.media import (
    AAC_RATE,
    FPS,
    FRAME_GAP,
    HEIGHT,
    WIDTH,
    assert_clean,
    ffmpeg_decode,
    ffmpeg_publish,
    ffprobe_streams,
    live_frames,
    wait_until,
)
from tests.support.procs import require_tool

from .test_rtmp_ingest import room_status, rtmp_publish_url, stop

pytestmark = pytest.mark.e2e

TARGET = 2.0  # HLS_FRAGMENT default; the publishers below use a 1 s GOP


def hls_url(service, room, path: str = "") -> str:
    return f"http://127.0.0.1:{service.media_http_port}/hls/{path or room['room']['room_id'] + '.m3u8'}"


def fetch(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def segments(playlist: str) -> list[tuple[float, str]]:
    lines = playlist.splitlines()
    return [(float(line[8:].rstrip(",")), lines[i + 1]) for i, line in enumerate(lines) if line.startswith("#EXTINF:")]


def playlist_text(service, room) -> str | None:
    """The media playlist, as a player gets it: through the entry point's one variant while live
    (the player's own `?ctx=` URL), or the file itself once the stream has ended."""
    return media_playlist(hls_url(service, room)) or None


def test_live_playlist_segments_and_endlist(service, room):
    publisher = ffmpeg_publish(rtmp_publish_url(service, room))
    try:
        assert wait_until(lambda: playlist_text(service, room) is not None, 15), service.log()
        status, headers, _ = fetch(hls_url(service, room))
        assert headers["Content-Type"] == "application/vnd.apple.mpegurl"
        assert headers["Cache-Control"] == "no-cache" and headers["Access-Control-Allow-Origin"] == "*"
        assert room["stream_key"] not in playlist_text(service, room)
        # while live: every listed segment exists, durations near the target
        deadline = time.monotonic() + 9
        while time.monotonic() < deadline:
            for _, uri in segments(playlist_text(service, room)):
                assert fetch(hls_url(service, room, uri))[0] == 200, uri
            time.sleep(0.5)
        listed = segments(playlist_text(service, room))
        assert len(listed) >= 3
        assert all(abs(duration - TARGET) <= 0.5 for duration, _ in listed), listed
        status, headers, body = fetch(hls_url(service, room, listed[0][1]))
        assert headers["Content-Type"] == "video/mp2t" and "max-age" in headers["Cache-Control"]
        streams = ffprobe_streams(hls_url(service, room, listed[0][1]))
        video = streams["video"]
        assert (video["codec_name"], video["width"], video["height"], video["r_frame_rate"]) == \
            ("h264", WIDTH, HEIGHT, f"{FPS}/1")
        assert streams["audio"]["codec_name"] == "aac"
    finally:
        publisher.terminate()  # ffmpeg closes the stream cleanly, as OBS does on "Stop Streaming"
        publisher.wait(10)
    assert wait_until(lambda: (playlist_text(service, room) or "").rstrip().endswith("#EXT-X-ENDLIST"), 10)
    # the whole recording-so-far reads back: every segment but the last holds exactly its EXTINF of
    # pictures (each is cut at a keyframe, the next one's start); the last one's EXTINF runs past
    # its last picture (FFmpeg's HLS muxer ends it where the audio ends, measured 2.21 s for 53
    # pictures), so it is held to its own decode: contiguous, and no longer than its EXTINF says
    listed = segments(playlist_text(service, room))
    assert len(listed) >= 3, listed
    last = ffmpeg_decode(hls_url(service, room, listed[-1][1]), seconds=None)
    assert_clean(last, video=(1, round(FPS * listed[-1][0])), max_gap=FRAME_GAP)
    whole = ffmpeg_decode(hls_url(service, room), seconds=None, timeout=60)
    shown = round(FPS * sum(duration for duration, _ in listed[:-1])) + last.video_frames
    # AAC at 44.1 kHz over the pictures' time, a frame or two either way at each end
    assert_clean(whole, video=shown, audio=live_frames(shown / FPS, AAC_RATE, slack=3), max_gap=FRAME_GAP)


def test_hls_js_plays_in_chromium(service, room):
    publisher = ffmpeg_publish(rtmp_publish_url(service, room))
    try:
        assert wait_until(lambda: room_status(service, room) == "live", 15)
        assert wait_until(lambda: len(segments(playlist_text(service, room) or "")) >= 2, 20)
        with chromium() as browser:
            browser.get(service.url(f"/live/{room['room']['room_id']}?player=hls"))
            video_time = "return document.getElementById('video').currentTime"
            assert wait_until(lambda: browser.execute_script(video_time) > 0.2, 20), browser.get_log("browser")
            start = browser.execute_script(video_time)
            time.sleep(10.5)
            assert browser.execute_script(video_time) - start >= 9.5
            assert browser.execute_script("return window.playerErrors") == []
    finally:
        stop(publisher)


def test_disk_holds_one_playlist_of_segments_after_five_minutes(service, room):
    """Five minutes of stream time, pushed at 10x real time (the segmenter follows timestamps)."""
    url = rtmp_publish_url(service, room)
    publisher = subprocess.Popen(
        [require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-readrate", "10",
         "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate={FPS}", "-f", "lavfi", "-i", "sine=sample_rate=44100",
         "-t", "300", "-c:v", "libx264", "-preset", "ultrafast", "-g", str(FPS), "-c:a", "aac", "-f", "flv", url],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    directory = service.dir / "hls" / room["room"]["room_id"]
    most = 0
    try:
        while publisher.poll() is None:
            if directory.exists():
                most = max(most, len(list(directory.glob("*.ts"))))
            time.sleep(0.2)
        assert publisher.returncode == 0, publisher.stderr.read().decode()
    finally:
        stop(publisher)
    listed = segments(playlist_text(service, room))
    assert sum(duration for duration, _ in listed) <= 60 + TARGET
    # the playlist length worth of segments, plus the one FFmpeg keeps past it (hls_delete_threshold),
    # plus, for an instant, a finished segment renamed into place before the oldest is deleted
    assert most <= 60 / TARGET + 2, most
    assert len(list(directory.glob("*.ts"))) <= 60 / TARGET + 1
