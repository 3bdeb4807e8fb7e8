"""Reconnect grace in the hub: a held stream keeps its viewers, a resumed publish continues its
timestamps, and the grace's end (or a staff drop) ends the stream and its session once."""

from __future__ import annotations

import asyncio

from media.hub.registry import StreamRegistry
from media.hub.unit import TICKS_PER_MS
from rtmp.from_hub import RtmpFanout, RtmpViewer

from .conftest import FakeTransport, audio, audio_config, cfg, video, video_config


class _Ends:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, reason: str, received: int) -> None:
        self.calls.append((reason, received))


class _Publisher:
    def __init__(self) -> None:
        self.dropped: list[str] = []

    def drop(self, reason: str) -> None:
        self.dropped.append(reason)


def _publish(stream, start_ms: int, frames: int) -> None:
    stream.write(video_config(start_ms))
    stream.write(audio_config(start_ms))
    for i in range(frames):
        stream.write(video(start_ms + i * 33, key=i == 0))
        stream.write(audio(start_ms + i * 33 + 5))


def _hold(registry: StreamRegistry, stream, ends: _Ends) -> bool:
    return registry.hold("room", stream, "publisher_left", session_id=7, bytes_received=1000, end_session=ends)


async def test_a_resumed_publish_continues_forward_for_the_same_viewers():
    registry = StreamRegistry(cfg(publish_grace=5.0))
    stream = registry.start("room", _Publisher(), protocol="rtmp")
    _publish(stream, 0, 30)
    viewer = RtmpViewer(FakeTransport(), stream_id=1)
    stream.fanout(RtmpFanout).add(viewer)
    newest = max(stream.last_dts("video"), stream.last_dts("audio"))
    ends = _Ends()
    assert _hold(registry, stream, ends)
    assert "room" in registry and registry.held_sessions() == {"room": 7}
    assert stream.held_since is not None and not stream.closed

    resumed: list = []
    registry.on_resume.append(resumed.append)
    held = registry.resume("room", 7, _Publisher(), protocol="rtmp", client_addr="127.0.0.1:2")
    assert held is not None and held.stream is stream and held.bytes_received == 1000
    assert resumed == [stream] and registry.held_sessions() == {}
    assert stream.gop is None  # joiners wait for the new publish's keyframe
    gen = stream.config_gen
    _publish(stream, 0, 30)  # the new publisher's clock starts at 0 again
    assert stream.config_gen == gen + 2  # its sequence headers reach the viewers again
    first_new = min(e.unit.dts for e in stream.gop)
    assert first_new == newest + 40 * TICKS_PER_MS  # a frame after the newest unit of any kind
    assert stream.last_dts("video") == first_new + 29 * 33 * TICKS_PER_MS
    assert viewer in stream.fanout(RtmpFanout).viewers and not viewer.transport.closing
    await asyncio.sleep(0)
    assert ends.calls == [] and stream.resumes == 1


async def test_the_grace_ends_the_stream_and_its_session_once():
    registry = StreamRegistry(cfg(publish_grace=0.05))
    stream = registry.start("room", _Publisher(), protocol="rtmp")
    _publish(stream, 0, 5)
    ends = _Ends()
    assert _hold(registry, stream, ends)
    await asyncio.sleep(0.15)
    assert stream.closed and stream.close_reason == "publisher_left"
    assert "room" not in registry and ends.calls == [("publisher_left", 1000)]
    assert registry.resume("room", 7, _Publisher(), protocol="rtmp") is None
    registry.start("room", _Publisher(), protocol="rtmp")  # the room may go live again


async def test_a_staff_drop_ends_a_held_stream_at_once():
    registry = StreamRegistry(cfg(publish_grace=30.0))
    stream = registry.start("room", _Publisher(), protocol="rtmp")
    _publish(stream, 0, 5)
    ends = _Ends()
    assert _hold(registry, stream, ends)
    assert await registry.drop_publisher("room", "dropped_by_staff")
    assert stream.closed and ends.calls == [("dropped_by_staff", 1000)]
    assert registry.held_sessions() == {}


async def test_no_grace_when_it_is_off_or_for_another_session():
    registry = StreamRegistry(cfg(publish_grace=0.0))
    stream = registry.start("room", _Publisher(), protocol="rtmp")
    assert not _hold(registry, stream, _Ends())  # the caller ends it as before
    registry = StreamRegistry(cfg(publish_grace=5.0))
    stream = registry.start("room", _Publisher(), protocol="rtmp")
    ends = _Ends()
    assert _hold(registry, stream, ends)
    assert registry.resume("room", 8, _Publisher(), protocol="rtmp") is None  # not that session's stream
    registry.close_all("error")
    assert ends.calls == [("error", 1000)]


class _Silent(_Publisher):
    """A publisher whose connection died unseen: when taken over it drops as a lost connection would."""

    def __init__(self, registry: StreamRegistry, ends: _Ends) -> None:
        super().__init__()
        self.registry, self.ends, self.lost_calls = registry, ends, 0

    async def lost(self) -> None:
        self.lost_calls += 1
        assert _hold(self.registry, self.registry.get("room"), self.ends)


async def test_a_new_publish_takes_over_from_a_silent_publisher():
    registry = StreamRegistry(cfg(publish_grace=5.0, publish_takeover_after=0.05))
    ends = _Ends()
    silent = _Silent(registry, ends)
    stream = registry.start("room", silent, protocol="webrtc", session_id=7)
    _publish(stream, 0, 5)
    assert registry.resumable() == {}  # it sends: a second publish is refused as already live
    await asyncio.sleep(0.1)
    assert stream.silent_for() >= 0.05 and registry.resumable() == {"room": 7}
    await registry.take_over("room")
    assert silent.lost_calls == 1 and registry.held_sessions() == {"room": 7} and registry.taken_over == 1
    held = registry.resume("room", 7, _Publisher(), protocol="rtmp")
    assert held is not None and held.stream is stream and not stream.closed
    _publish(stream, 0, 5)
    assert registry.resumable() == {} and ends.calls == []  # the new publisher sends


async def test_no_takeover_without_the_grace_or_a_session():
    registry = StreamRegistry(cfg(publish_grace=0.0, publish_takeover_after=0.01))
    registry.start("room", _Publisher(), protocol="rtmp", session_id=7)
    registry.start("other", _Publisher(), protocol="rtmp")
    await asyncio.sleep(0.05)
    assert registry.resumable() == {}
    registry = StreamRegistry(cfg(publish_grace=5.0, publish_takeover_after=0.01))
    registry.start("other", _Publisher(), protocol="rtmp")  # no session id: not resumable
    await asyncio.sleep(0.05)
    assert registry.resumable() == {}
