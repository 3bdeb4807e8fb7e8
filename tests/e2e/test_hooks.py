"""Webhooks end to end: the service calls a real receiver (an HTTP server in this process) for
every event of a publish / play / end sequence, signed, in order, without the stream key; an
on_publish or on_play hook that says no (or never answers) refuses with the protocol's own error
while other streams keep playing; a notification receiver that is down gets it once it is back."""
from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.sfu.clients import PatternVideo, ToneAudio, whip_publish
from tests.support.api import create_room
from tests.support.hook_receiver import HookReceiver
from tests.support.media import (
    AAC_RATE,
    assert_live,
    decode_errors,
    ffmpeg_decode,
    ffmpeg_publish,
    framemd5_frames,
    live_frames,
    wait_until,
)
from tests.support.procs import Service

from .test_rtmp_ingest import flv_url, room_status, rtmp_play_url, rtmp_publish_url

SECRET = "e2e-hook-secret"
EVENTS = ("on_publish", "on_publish_done", "on_play", "on_play_done", "on_record_done")


@pytest.fixture(scope="module")
def receiver():
    server = HookReceiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def service(receiver):
    env = {f"HOOK_{event.upper()}": receiver.url(event) for event in EVENTS}
    env |= {"HOOK_SECRET": SECRET, "HOOK_TIMEOUT": "1", "HOOK_RETRY_BASE": "0.5", "HOOK_RETRIES": "5"}
    with Service(env) as running:
        yield running


@pytest.fixture(autouse=True)
def answers(receiver):
    """What the receiver answers in this test (and what it received before is forgotten: a list
    of answers counts this test's requests)."""
    receiver.answers.clear()
    receiver.received.clear()
    yield receiver.answers
    receiver.answers.clear()


def of_room(receiver: HookReceiver, room: dict) -> list:
    return [r for r in receiver.received if r.json.get("room_id") == room["room"]["room_id"]]


def test_every_event_of_a_publish_play_end_sequence_arrives_signed_in_order(service, receiver, room):
    publisher = ffmpeg_publish(rtmp_publish_url(service, room), seconds=10)
    try:
        assert wait_until(lambda: room_status(service, room) == "live", 15)
        decoded = ffmpeg_decode(rtmp_play_url(service, room), seconds=3)
        # 3 s from the GOP cache's keyframe on, none lost
        assert_live(decoded, 3)
        assert publisher.wait(30) == 0
    finally:
        if publisher.poll() is None:
            publisher.kill()
    assert wait_until(lambda: "on_publish_done" in [r.json["event"] for r in of_room(receiver, room)], 15)
    got = of_room(receiver, room)
    assert [r.json["event"] for r in got] == ["on_publish", "on_play", "on_play_done", "on_publish_done"]
    assert all(r.signed_with(SECRET) for r in got)
    assert not any(room["stream_key"].encode() in r.body for r in got)
    publish, play, play_done, publish_done = (r.json for r in got)
    assert publish["protocol"] == play["protocol"] == "rtmp" and publish["client_addr"].startswith("127.0.0.1:")
    assert play["viewer_id"] == play_done["viewer_id"] and play_done["bytes_sent"] > 100_000
    assert play["session_id"] == publish_done["session_id"] and publish_done["reason"] == "publisher_left"


async def test_on_publish_answering_403_refuses_an_rtmp_push_and_a_whip_publish(service, receiver, room, answers):
    answers["on_publish"] = 403
    publisher = ffmpeg_publish(rtmp_publish_url(service, room), seconds=5)
    assert await asyncio.to_thread(publisher.wait, 15) != 0
    with pytest.raises(AssertionError, match="WHIP refused: 403"):
        await whip_publish(service.url(""), room["room"]["room_id"], room["stream_key"],
                           [PatternVideo(320, 180, 30), ToneAudio()])
    assert room_status(service, room) != "live"
    assert [r.json["protocol"] for r in of_room(receiver, room)] == ["rtmp", "webrtc"]
    assert "publish refused" in service.log() and "on_publish hook refused it: answered 403" in service.log()


def test_an_on_play_hook_answering_403_refuses_rtmp_and_flv_players(service, room, answers):
    publisher = ffmpeg_publish(rtmp_publish_url(service, room), seconds=20)
    try:
        assert wait_until(lambda: room_status(service, room) == "live", 15)
        answers["on_play"] = 403
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(flv_url(service, room), timeout=10)
        assert refused.value.code == 403
        decoded = ffmpeg_decode(rtmp_play_url(service, room), seconds=2, timeout=20)
        assert decoded.returncode != 0 and decoded.video_frames == 0
    finally:
        publisher.kill()
        publisher.wait(10)


def test_a_hook_that_never_answers_refuses_after_hook_timeout_while_another_stream_plays(service, streamer_token,
                                                                                          room, answers):
    publisher = ffmpeg_publish(rtmp_publish_url(service, room), seconds=30)
    other = create_room(service, streamer_token, "the other stream")
    try:
        assert wait_until(lambda: room_status(service, room) == "live", 15)
        reader = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", rtmp_play_url(service, room),
                                   "-t", "6", "-f", "framemd5", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        time.sleep(0.5)
        answers["on_publish"] = None  # hangs
        started = time.monotonic()
        refused = ffmpeg_publish(rtmp_publish_url(service, other), seconds=5)
        assert refused.wait(15) != 0
        assert 1.0 <= time.monotonic() - started < 5.0
        out, err = reader.communicate(timeout=30)
        counts, pts, starts = framemd5_frames(out)
        # the stream plays on through the other publish's hung hook: the 6 s of it, none lost
        assert reader.returncode == 0 and not decode_errors(err), err[-1500:]
        (low, high), (audio_low, audio_high) = live_frames(6, start=pts[0]), live_frames(6, AAC_RATE,
                                                                                          start=starts["audio"])
        assert low <= counts["video"] <= high and audio_low <= counts["audio"] <= audio_high, counts
    finally:
        publisher.kill()
        publisher.wait(10)
    assert room_status(service, other) != "live"


def test_a_notification_receiver_that_is_down_is_retried_and_gets_it_when_back(service, receiver, streamer_token,
                                                                              answers):
    answers["on_publish_done"] = [503, 503, 200]  # down twice, then back
    room = create_room(service, streamer_token, "receiver down")
    publisher = ffmpeg_publish(rtmp_publish_url(service, room), seconds=3)
    assert publisher.wait(20) == 0
    assert wait_until(lambda: len([r for r in of_room(receiver, room) if r.json["event"] == "on_publish_done"]) == 3,
                      20)
    tries = [r for r in of_room(receiver, room) if r.json["event"] == "on_publish_done"]
    assert tries[1].at - tries[0].at >= 0.4 and tries[2].at - tries[1].at >= 0.9  # 0.5 s, then doubled
    assert len({r.body for r in tries}) == 1 and all(r.signed_with(SECRET) for r in tries)

