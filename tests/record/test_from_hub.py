"""Recorder and RecorderService over real hub streams in an asyncio loop."""
from __future__ import annotations

import asyncio
import functools
import subprocess
import tempfile
from pathlib import Path

import av
import pytest

from media.config import MediaConfig
from media.hub.stream import Stream
from media.hub.unit import TIME_BASE, VIDEO, AccessUnit
from media.record.from_hub import Recorder, RecorderService, RecordingPlan
from media.record.writer import RecordingInfo
from tests.support.procs import require_tool

from .media_check import decode_errors, flv_units, media, probe, shifted


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: these tests need no Django."""


def new_stream(public_id: str = "room") -> Stream:
    return Stream(public_id, MediaConfig(hub_tick_ms=20))


async def write(stream: Stream, units) -> None:
    for unit in units:
        stream.write(unit)
        await asyncio.sleep(0)


async def until(predicate, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


class Control:
    """A fake control plane: records the streams in `record`, notes every `done`."""

    def __init__(self, record: set[str] = frozenset()) -> None:
        self.record = set(record)
        self.asked: list[str] = []
        self.done: list[tuple[RecordingPlan, RecordingInfo | None, str]] = []

    async def wants(self, public_id: str) -> RecordingPlan | None:
        self.asked.append(public_id)
        await asyncio.sleep(0)
        return RecordingPlan(f"rec-{public_id}-{self.asked.count(public_id)}") if public_id in self.record else None

    async def on_done(self, plan: RecordingPlan, info: RecordingInfo | None, reason: str) -> None:
        self.done.append((plan, info, reason))


def service(root: Path, control: Control) -> RecorderService:
    return RecorderService(root, control.wants, control.on_done)


async def test_a_recorder_records_the_stream_until_it_ends(tmp_path):
    units = flv_units(6)
    stream = new_stream()
    recorder = Recorder(stream, tmp_path / "r.mp4")
    task = asyncio.create_task(recorder.run())
    await write(stream, units)
    stream.close("publisher_left")
    info = await task
    assert info is not None and recorder.end_reason == "publisher_left" and not stream.readers
    assert int(probe(info.path)["video"]["nb_read_frames"]) == len(media(units))
    assert decode_errors(info.path) == ""


async def test_stop_ends_the_file_cleanly_mid_stream(tmp_path):
    units = flv_units(6)
    half = len(units) // 2
    stream = new_stream()
    recorder = Recorder(stream, tmp_path / "r.mp4")
    task = asyncio.create_task(recorder.run())
    await write(stream, units[:half])
    recorder.stop()
    await write(stream, units[half:])  # the stream goes on without the recorder
    info = await task
    assert info is not None and recorder.end_reason == "stopped" and not stream.readers
    # stop writes what is queued, then closes: every picture written before it
    assert int(probe(info.path)["video"]["nb_read_frames"]) == len(media(units[:half]))
    assert decode_errors(info.path) == ""
    stream.close("publisher_left")


async def test_a_recorder_joining_a_live_stream_starts_from_its_gop_cache(tmp_path):
    units = flv_units(4)
    stream = new_stream()
    await write(stream, units[:40])
    recorder = Recorder(stream, tmp_path / "r.mp4")
    task = asyncio.create_task(recorder.run())
    await write(stream, units[40:])
    stream.close("publisher_left")
    info = await task
    assert info is not None and info.first_dts == 0  # the first GOP, from the cache
    assert int(probe(info.path)["video"]["nb_read_frames"]) == len(media(units))


async def test_the_service_records_only_what_the_control_plane_wants(tmp_path):
    control = Control(record={"yes"})
    recorders = service(tmp_path, control)
    units = flv_units(4)
    streams = [new_stream("yes"), new_stream("no")]
    for stream in streams:
        recorders.stream_started(stream)
    await until(lambda: len(control.asked) == 2)
    for stream in streams:
        await write(stream, units[:2])  # the recorder starts once the tracks are known
    await until(lambda: recorders.active == 1)
    for stream in streams:
        await write(stream, units[2:])
        stream.close("publisher_left")
    await until(lambda: control.done and not recorders.active)
    [(plan, info, reason)] = control.done
    assert (plan.recording_id, reason) == ("rec-yes-1", "publisher_left")
    assert info is not None and info.path == tmp_path / "rec-yes-1.part.mp4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec-yes-1.part.mp4"]
    assert int(probe(info.path)["video"]["nb_read_frames"]) == len(media(units))


async def test_staff_start_and_stop_on_a_live_stream(tmp_path):
    control = Control()
    recorders = service(tmp_path, control)
    stream = new_stream()
    recorders.stream_started(stream)
    await until(lambda: control.asked)
    units = flv_units(6)
    await write(stream, units[:60])
    assert recorders.start("room", RecordingPlan("staff-1"))
    assert not recorders.start("room", RecordingPlan("staff-2")) and not recorders.start("gone", RecordingPlan("x"))
    await until(lambda: recorders.recording("room"))
    await write(stream, units[60:300])
    assert recorders.stop("room")
    await until(lambda: control.done)
    [(plan, info, reason)] = control.done
    assert (plan.recording_id, reason) == ("staff-1", "stopped") and info is not None
    assert decode_errors(info.path) == ""
    # from the GOP cache's keyframe when staff started (the last one of the first 60 units) to the stop
    key = [u for u in media(units[:60]) if u.keyframe][-1]
    assert int(probe(info.path)["video"]["nb_read_frames"]) == len([u for u in media(units[:300]) if u.dts >= key.dts])
    assert not recorders.stop("room") and recorders.active == 0
    await write(stream, units[300:])
    stream.close("publisher_left")


async def test_a_new_picture_size_ends_the_part_and_a_new_one_follows(tmp_path):
    control = Control(record={"room"})
    recorders = service(tmp_path, control)
    first, second = flv_units(3), flv_units(3, size="640x360")
    stream = new_stream()
    recorders.stream_started(stream)
    await write(stream, first[:2])
    await until(lambda: recorders.active)
    await write(stream, first[2:])
    await write(stream, shifted(second, max(u.dts for u in first) + TIME_BASE // 30))
    await until(lambda: len(control.asked) == 2)
    stream.close("publisher_left")
    await until(lambda: len(control.done) == 2 and not recorders.active)
    (plan1, info1, reason1), (plan2, info2, reason2) = control.done
    assert (reason1, reason2) == ("config_changed", "publisher_left")
    assert (info1.width, info1.height, info2.width, info2.height) == (320, 180, 640, 360)
    assert int(probe(info1.path)["video"]["nb_read_frames"]) == len(media(first))
    assert decode_errors(info2.path) == ""


async def test_stop_all_ends_every_recording_with_shutdown(tmp_path):
    control = Control(record={"a", "b", "silent"})
    recorders = service(tmp_path, control)
    streams = [new_stream("a"), new_stream("b")]
    recorders.stream_started(new_stream("silent"))  # live, but no unit yet: nothing to record
    for stream in streams:
        recorders.stream_started(stream)
        await write(stream, flv_units(3)[:2])
    await until(lambda: recorders.active == 2 and len(control.asked) == 3)
    for stream in streams:
        await write(stream, flv_units(3)[2:])
    await recorders.stop_all()
    done = {plan.recording_id: (info, reason) for plan, info, reason in control.done}
    assert {k: reason for k, (_, reason) in done.items()} == \
        {"rec-a-1": "shutdown", "rec-b-1": "shutdown", "rec-silent-1": "shutdown"}
    assert done["rec-silent-1"][0] is None
    assert all(decode_errors(done[k][0].path) == "" for k in ("rec-a-1", "rec-b-1"))
    recorders.stream_started(new_stream("a"))  # shutting down: nothing more starts
    await asyncio.sleep(0.05)
    assert recorders.active == 0 and len(control.asked) == 3


@functools.cache
def vp8_units(seconds: int = 3) -> tuple[AccessUnit, ...]:
    """What a browser publishes: VP8 (no configuration unit), from ffmpeg's libvpx through WebM."""
    path = Path(tempfile.mkdtemp(prefix="mv-rec-")) / "vp8.webm"
    subprocess.run([require_tool("ffmpeg"), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=320x180:rate=30", "-t", str(seconds), "-c:v", "libvpx", "-g", "30",
                    "-deadline", "realtime", "-b:v", "500k", str(path)], check=True, timeout=120)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tick = stream.time_base * TIME_BASE
        return tuple(AccessUnit(VIDEO, "vp8", round(p.dts * tick), round(p.pts * tick), bytes(p),
                                keyframe=p.is_keyframe) for p in container.demux(stream) if p.size)


async def test_a_vp8_stream_is_recorded_from_its_h264_rendition(tmp_path):
    control = Control(record={"room"})
    recorders = service(tmp_path, control)
    stream = new_stream()
    recorders.stream_started(stream)
    units = vp8_units()
    await write(stream, units[:1])
    await until(lambda: recorders.active)
    for unit in units[1:]:
        stream.write(unit)
        await asyncio.sleep(1 / 30)  # at a live source's pace, which the transcode keeps up with
    await asyncio.sleep(0.5)
    stream.close("publisher_left")
    await until(lambda: control.done)
    [(_, info, reason)] = control.done
    assert reason == "publisher_left" and info is not None and info.video_codec == "h264"
    # every picture: the stream's end flushes the transcode (measured 90 of 90)
    assert int(probe(info.path)["video"]["nb_read_frames"]) == len(units)
    assert decode_errors(info.path) == ""
