"""Per-stream readers: bounded queue, drop to the next keyframe, counted; the writer never waits."""

from __future__ import annotations

import asyncio

from media.hub.stream import Stream

from .conftest import audio_config, av_stream, cfg, video, video_config


def test_reader_is_primed_with_configs_and_gop():
    s = Stream("r", cfg())
    s.write(video_config())
    s.write(audio_config())
    s.write(video(0, key=True))
    s.write(video(33))
    r = s.add_reader("hls", max_units=100)
    assert r.queued == 4


def test_reader_queue_bounded_drops_to_keyframe_and_counts():
    s = Stream("r", cfg())
    s.write(video_config())
    s.write(audio_config())
    r = s.add_reader("slow", max_units=50)
    units = av_stream(0, 5, gop_ms=1000)
    for u in units:
        s.write(u)  # nobody drains: never blocks, never grows past the bound
        assert r.queued <= 50
    assert r.overflows >= 1 and r.dropped > 0
    assert r.queued + r.dropped >= len(units) - 5


async def test_reader_task_drains_resumes_at_keyframe_and_ends():
    s = Stream("r", cfg())
    s.write(video_config())
    r = s.add_reader("rec", max_units=20)
    got = []

    async def consume():
        async for unit in r:
            got.append(unit)
            await asyncio.sleep(0)

    task = asyncio.create_task(consume())
    units = av_stream(0, 4, gop_ms=1000)
    for u in units[:30]:
        s.write(u)
    await asyncio.sleep(0.01)
    for u in units[30:]:  # burst: overflows
        s.write(u)
    s.close("publisher_left")
    await asyncio.wait_for(task, 1)
    assert r.ended and r.end_reason == "publisher_left"
    assert r.dropped > 0
    after_gap = [u for u in got[1:] if not u.config]
    positions = [units.index(u) for u in after_gap]
    gaps = [i for i in range(1, len(positions)) if positions[i] != positions[i - 1] + 1]
    assert gaps and all(units[positions[g]].keyframe for g in gaps)
    assert s.readers == ()


async def test_a_gathering_reader_wakes_per_span_or_keyframe_not_per_unit():
    s = Stream("r", cfg())
    s.write(video_config())
    r = s.add_reader("hls", max_units=1000, gather_ms=200)
    units = [u for u in av_stream(0, 4, gop_ms=2000) if u.kind == "video"]  # 30 fps, a keyframe every 2 s
    batches = []

    async def consume():
        while (batch := await r.batch(1000)) is not None:
            batches.append(batch)

    task = asyncio.create_task(consume())
    for u in units:
        s.write(u)
        await asyncio.sleep(0)  # the reader could run after every unit: it must not wake for each
    s.close("publisher_left")
    await asyncio.wait_for(task, 1)
    got = [u for b in batches for u in b if not u.config]
    assert got == units  # nothing lost, in order
    assert len(batches) <= 4 * 1000 // 200 + 3  # one per 200 ms of media (+ the primed start and keyframes)
    for b in batches[1:-1]:
        media = [u for u in b if not u.config]
        # a batch spans at most the gather span (a keyframe wakes at once and starts the next one)
        assert (media[-1].dts - media[0].dts) // 90 <= 200



async def test_a_gathering_reader_wakes_at_the_unit_after_a_keyframe():
    """The HLS muxer writes a segment's closing keyframe only once the audio after it is in: that
    unit must not wait for the next span."""
    s = Stream("r", cfg())
    s.write(video_config())
    r = s.add_reader("hls", max_units=1000, gather_ms=200)
    while await asyncio.wait_for(r.batch(1000), 1):  # the primed config
        if not r.queued:
            break
    units = av_stream(0, 2.1, gop_ms=2000)
    keyframe = next(i for i, u in enumerate(units) if u.kind == "video" and u.keyframe and u.dts > 0)
    for u in units[:keyframe + 1]:
        s.write(u)
    while r.queued:
        await r.batch(1000)
    s.write(units[keyframe + 1])
    assert await asyncio.wait_for(r.batch(1000), 1) == [units[keyframe + 1]]
