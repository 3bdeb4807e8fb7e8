"""Renditions: the codecs each target needs, decided from what the stream carries, once per stream."""
from __future__ import annotations

import asyncio

import pytest

from media.bridges import rendition as rmod
from media.bridges.rendition import CONVERT, DROP, H264_AAC, PASS, WEBRTC, plan, playable, renditions
from media.config import MediaConfig
from media.hub.stream import Stream
from tests.support.flv_source import access_units, ffmpeg_flv


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: no Django here."""


def test_plans_follow_what_each_target_plays():
    assert plan(WEBRTC, "video", "h264") == PASS
    assert plan(WEBRTC, "video", "h264", reordered=True) == CONVERT  # B-frames
    assert plan(WEBRTC, "video", "hevc") == CONVERT
    assert plan(WEBRTC, "audio", "aac") == CONVERT
    assert plan(WEBRTC, "audio", "flv/mp3") == DROP
    assert plan(H264_AAC, "video", "h264", reordered=True) == PASS
    assert plan(H264_AAC, "video", "vp8") == CONVERT
    assert plan(H264_AAC, "audio", "opus") == CONVERT
    assert plan(H264_AAC, "audio", "aac") == PASS


class Viewer:
    def __init__(self) -> None:
        self.entries = []

    def on_entry(self, entry) -> None:
        self.entries.append(entry)

    def stream_ended(self, reason: str) -> None:
        self.ended = reason

    viewer_count = 1


async def _feed(stream: Stream, units, pace: int = 8) -> None:
    for i, unit in enumerate(units):
        stream.write(unit)
        if i % pace == 0:
            await asyncio.sleep(0.002)  # let the bridge thread keep up, as a live source would


def test_an_h264_aac_stream_is_itself_for_hls_and_an_opus_rendition_for_webrtc(monkeypatch):
    monkeypatch.setattr(rmod, "IDLE_AFTER", 0.3)
    units = access_units(ffmpeg_flv(seconds=4, bframes=0))

    async def run():
        stream = Stream("r1", MediaConfig())
        for unit in units[:40]:
            stream.write(unit)
        assert playable(stream, H264_AAC) is stream
        watched = playable(stream, WEBRTC)
        assert watched is not stream and playable(stream, WEBRTC) is watched  # once per stream
        assert watched.tracks() == {"video": "h264", "audio": "opus"}
        assert watched.video_config is not None and watched.gop  # joiners start at once
        viewer = Viewer()
        watched.add_sink(viewer)
        watched.viewers_changed()
        assert stream.viewer_count == 1  # the source counts its rendition's viewers
        await _feed(stream, units[40:])
        await asyncio.sleep(0.3)
        kinds = {(e.unit.kind, e.unit.codec) for e in viewer.entries if not e.unit.config}
        assert kinds == {("video", "h264"), ("audio", "opus")}
        video = [e for e in viewer.entries if e.unit.kind == "video"]
        assert len(video) == len([u for u in units[40:] if u.kind == "video"])  # passed, none lost
        [r] = renditions(stream)
        p50, p99 = rmod.latency_ms(r)
        assert p99 < 1000
        watched.remove_sink(viewer)
        await asyncio.sleep(0.8)
        assert watched.closed and watched.close_reason == "idle" and renditions(stream) == []
        assert all(b.task.done() for b in r.bridges.values())
        assert playable(stream, WEBRTC) is not watched  # a new viewer makes a new one
        stream.close("publisher_left")
        await asyncio.sleep(0)

    asyncio.run(run())


def test_the_source_ending_ends_its_renditions():
    units = access_units(ffmpeg_flv(seconds=2, bframes=0))

    async def run():
        stream = Stream("r2", MediaConfig())
        for unit in units[:10]:
            stream.write(unit)
        watched = playable(stream, WEBRTC)
        [r] = renditions(stream)
        viewer = Viewer()
        watched.add_sink(viewer)
        stream.close("publisher_left")
        assert watched.closed and viewer.ended == "publisher_left"
        await asyncio.sleep(0.05)
        assert r.bridges and all(b.task.done() for b in r.bridges.values())

    asyncio.run(run())


@pytest.mark.parametrize("seen", [40, 3], ids=["b-frames-known", "b-frames-appear-later"])
def test_b_frames_make_a_webrtc_rendition_reencode_the_video_without_them(seen):
    units = access_units(ffmpeg_flv(seconds=4, bframes=3))
    video_in = [u for u in units if u.kind == "video" and not u.config]

    async def run():
        stream = Stream("r3", MediaConfig())
        for unit in units[:seen]:
            stream.write(unit)
        assert (stream.reordered_frames > 0) == (seen > 3)
        watched = playable(stream, WEBRTC)
        viewer = Viewer()
        watched.add_sink(viewer)
        await _feed(stream, units[seen:])
        await asyncio.sleep(0.5)
        video = [e.unit for e in viewer.entries if e.unit.kind == "video"]
        # Frames seen before the first B-frame passed as they were; the re-encode starts at its config.
        start = max(i for i, u in enumerate(video) if u.config)
        out = [u for u in video[start:] if not u.config]
        assert out and out[0].keyframe
        assert all(u.pts == u.dts for u in out)
        assert [u.pts for u in out] == sorted(u.pts for u in out)  # presentation order: no B-frames
        assert len(out) >= len([u for u in video_in if u.dts >= out[0].pts]) - 4
        assert rmod.BFRAMES_NOTE in renditions(stream)[0].notes
        stream.close("publisher_left")
        await asyncio.sleep(0.05)

    asyncio.run(run())


def test_past_transcode_max_hls_is_refused_and_webrtc_gets_the_video_as_it_is():
    units = access_units(ffmpeg_flv(seconds=2, bframes=3))

    async def run():
        stream = Stream("r4", MediaConfig.from_env({"TRANSCODE_MAX": "0"}))  # none allowed
        for unit in units[:30]:
            stream.write(unit)
        refused = rmod.COUNTERS["video_refused"]
        watched = playable(stream, WEBRTC)
        assert "TRANSCODE_MAX" in " ".join(renditions(stream)[0].notes)
        assert rmod.COUNTERS["video_refused"] == refused + 1
        assert watched.tracks()["video"] == "h264" and "video" not in renditions(stream)[0].bridges
        stream.close("publisher_left")
        await asyncio.sleep(0.05)

    asyncio.run(run())


@pytest.mark.parametrize(("codec", "args"), [
    ("hevc", ("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error")),
    ("av1", ("-c:v", "libaom-av1", "-usage", "realtime", "-cpu-used", "8")),
])
def test_enhanced_rtmp_hevc_and_av1_reach_webrtc_as_h264(codec, args):
    """OBS 30+'s HEVC/AV1 over Enhanced RTMP: browsers' WebRTC here plays neither, so the WebRTC
    rendition re-encodes the video to H.264 (once per stream); FFmpeg decodes what comes out."""
    from media.hub.unit import AccessUnit
    from tests.bridges.test_video import encoded, probe

    config, frames = encoded(codec, *args, seconds=3)

    async def run():
        stream = Stream(f"r-{codec}", MediaConfig())
        stream.source_protocol = "rtmp"
        stream.write(AccessUnit("video", codec, 0, 0, config or b"", config=True))
        stream.write(frames[0])
        watched = playable(stream, WEBRTC)
        assert watched.tracks() == {"video": "h264"}
        viewer = Viewer()
        watched.add_sink(viewer)
        await _feed(stream, frames[1:], pace=2)
        await asyncio.sleep(0.5)
        out = [e.unit for e in viewer.entries]
        shown = probe(out)
        assert (shown["codec_name"], shown["width"], shown["height"]) == ("h264", 320, 240)
        assert int(shown["nb_read_frames"]) >= len(frames) - 4
        assert renditions(stream)[0].describe()["transcodes"] == {"video": {"from": codec, "to": "h264", "dropped": 0}}
        stream.close("publisher_left")
        await asyncio.sleep(0.05)

    asyncio.run(run())


def test_a_vp8_publisher_for_hls_is_refused_clearly_past_transcode_max():
    from tests.bridges.test_video import encoded

    _, frames = encoded("vp8", "-c:v", "libvpx", "-deadline", "realtime", seconds=1)

    async def run():
        stream = Stream("r-vp8", MediaConfig(transcode_max=0))
        stream.source_protocol = "webrtc"
        for unit in frames[:5]:
            stream.write(unit)
        with pytest.raises(rmod.TranscodeRefused, match="TRANSCODE_MAX"):
            playable(stream, H264_AAC)
        assert renditions(stream) == [] and rmod.BUDGET.running == 0
        from media.runtime import stream_media
        assert any("refused" in n and "TRANSCODE_MAX" in n for n in stream_media(stream)["notes"])
        stream.config = MediaConfig(transcode_max=1)
        watched = playable(stream, H264_AAC)
        assert watched.tracks() == {"video": "h264"} and rmod.BUDGET.running == 1
        stream.close("publisher_left")
        assert rmod.BUDGET.running == 0  # the slot is given back with the stream
        await asyncio.sleep(0.05)

    asyncio.run(run())


@pytest.mark.parametrize("pyramid", ["none", "normal"])
def test_webrtc_bframes_drop_drops_non_reference_b_frames_and_reencodes_when_one_is_a_reference(
        pyramid):
    """WEBRTC_BFRAMES=drop: x264 without B-pyramid makes only non-reference B-frames, which are
    dropped (no transcode, a quarter of the frames left with -bf 3); with B-pyramid the middle
    B-frame is a reference, and dropping it would break the picture: the video is re-encoded."""
    from tests.bridges.test_video import encoded, probe

    config, frames = encoded("h264", "-c:v", "libx264", "-preset", "veryfast", "-bf", "3", "-g", "60",
                             "-x264-params", f"b-pyramid={pyramid}:b-adapt=0", seconds=2)

    async def run():
        from media.hub.unit import AccessUnit
        stream = Stream(f"r-drop-{pyramid}", MediaConfig.from_env({"WEBRTC_BFRAMES": "drop"}))
        stream.source_protocol = "rtmp"
        stream.write(AccessUnit("video", "h264", 0, 0, config, config=True))
        stream.write(frames[0])
        watched = playable(stream, WEBRTC)
        assert watched is stream  # no B-frame seen yet: nothing to convert
        for unit in frames[1:8]:
            stream.write(unit)
        assert stream.reordered_frames
        watched = playable(stream, WEBRTC)  # a viewer joining now
        viewer = Viewer()
        watched.add_sink(viewer)
        await _feed(stream, frames[8:], pace=2)
        await asyncio.sleep(0.5)
        [r] = renditions(stream)
        joined = watched.configs() + [e for e in watched.gop or [] if e not in viewer.entries]
        out = [e.unit for e in joined] + [e.unit for e in viewer.entries]
        if pyramid == "none":
            assert "video" not in r.bridges and r.bframes_dropped >= (len(frames) - 8) * 3 // 4 - 3
            assert rmod.BFRAMES_DROPPED_NOTE in r.notes
            shown = probe(out)  # what is left decodes cleanly: no frame referenced a dropped one
            assert "B" not in shown["pict_types"] and int(shown["nb_read_frames"]) >= (len(frames) - 8) // 4
        else:
            assert "video" in r.bridges and r.bframes_dropped == 0
        stream.close("publisher_left")
        await asyncio.sleep(0.05)

    asyncio.run(run())
