"""The HLS segmenter fed with ffmpeg-encoded FLV, read back by ffprobe/ffmpeg."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from media.hls.segmenter import HlsOptions, HlsSegmenter, HlsUnsupported
from tests.support.flv_source import access_units, ffmpeg_flv
from tests.support.media import assert_no_decode_errors


def listed_segments(playlist: Path) -> list[tuple[float, str]]:
    lines = playlist.read_text().splitlines()
    return [(float(line.split(":")[1].rstrip(",")), lines[i + 1]) for i, line in enumerate(lines)
            if line.startswith("#EXTINF:")]


def probe(path: Path) -> dict:
    result = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert_no_decode_errors(result, path)
    return {s["codec_type"]: s for s in json.loads(result.stdout)["streams"]}


def test_segments_decode_with_source_codecs_size_rate_and_target_durations(tmp_path):
    segmenter = HlsSegmenter(tmp_path, "room1", HlsOptions(fragment=2, playlist_length=60))
    for unit in access_units(ffmpeg_flv(seconds=10)):
        segmenter.write(unit)
    segmenter.close()
    playlist = tmp_path / "room1.m3u8"
    text = playlist.read_text()
    assert text.rstrip().endswith("#EXT-X-ENDLIST") and "#EXT-X-MEDIA-SEQUENCE:" in text
    segments = listed_segments(playlist)
    assert all(uri.startswith("room1/seg") for _, uri in segments)
    assert all(abs(duration - 2.0) <= 0.5 for duration, _ in segments[:-1]), segments
    counts = []
    for _, uri in segments:
        streams = probe(tmp_path / uri)
        video = streams["video"]
        assert (video["codec_name"], video["width"], video["height"], video["r_frame_rate"]) == \
            ("h264", 320, 180, "30/1")
        assert streams["audio"]["codec_name"] == "aac"
        counts.append(int(video["nb_read_frames"]))  # each segment decodes on its own
    # every segment holds its EXTINF of pictures but the last, whose EXTINF FFmpeg's muxer runs on
    # to the audio's end (2.5 s listed for its 2 s here); together, the 300 pictures sent
    assert counts[:-1] == [round(30 * duration) for duration, _ in segments[:-1]], (counts, segments)
    assert 0 < counts[-1] <= round(30 * segments[-1][0]) and sum(counts) == 300, (counts, segments)
    whole = probe(playlist)
    assert int(whole["video"]["nb_read_frames"]) == 300
    assert abs(int(whole["audio"]["nb_read_frames"]) - 10 * 44100 / 1024) <= 2, whole["audio"]["nb_read_frames"]


def test_rolling_playlist_deletes_old_segments_and_never_lists_a_missing_one(tmp_path):
    segmenter = HlsSegmenter(tmp_path, "r", HlsOptions(fragment=1, playlist_length=4))
    playlist = tmp_path / "r.m3u8"
    for index, unit in enumerate(access_units(ffmpeg_flv(seconds=20))):
        segmenter.write(unit)
        if index % 20 == 0 and playlist.exists():
            listed = listed_segments(playlist)
            assert len(listed) <= 4
            assert all((tmp_path / uri).exists() for _, uri in listed)
            assert len(list((tmp_path / "r").glob("*.ts"))) <= 4 + 2  # list + threshold + the one being written
    segmenter.close()
    sequence = int(next(line for line in playlist.read_text().splitlines()
                        if line.startswith("#EXT-X-MEDIA-SEQUENCE")).split(":")[1])
    first_number = int(listed_segments(playlist)[0][1].split("seg")[1][:-3])
    assert first_number == sequence and len(list((tmp_path / "r").glob("*.ts"))) <= 5


def test_reconnect_appends_with_a_discontinuity_and_consistent_numbering(tmp_path):
    units = access_units(ffmpeg_flv(seconds=6))
    first = HlsSegmenter(tmp_path, "room", HlsOptions(2, 60))
    for unit in units:
        first.write(unit)
    first.close()
    before = listed_segments(tmp_path / "room.m3u8")
    time.sleep(1.1)  # the new session starts in a later second: numbering must still continue
    second = HlsSegmenter(tmp_path, "room", HlsOptions(2, 60), resume=True)
    for unit in units:
        second.write(unit)
    second.close()
    text = (tmp_path / "room.m3u8").read_text()
    after = listed_segments(tmp_path / "room.m3u8")
    assert after[: len(before)] == before and len(after) > len(before)
    numbers = [int(uri.split("seg")[1][:-3]) for _, uri in after]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert text.count("#EXT-X-ENDLIST") == 1
    # the new publisher's first segment is marked (FFmpeg may also mark the playlist's head)
    boundary = text[text.index(before[-1][1]):text.index(after[len(before)][1])]
    assert boundary.count("#EXT-X-DISCONTINUITY") == 1


def test_video_only_stream_is_segmented(tmp_path):
    segmenter = HlsSegmenter(tmp_path, "v", HlsOptions(2, 60))
    for unit in access_units(ffmpeg_flv(seconds=5, audio=False)):
        segmenter.write(unit)
    segmenter.close()
    found = probe(tmp_path / "v.m3u8")
    assert "audio" not in found and int(found["video"]["nb_read_frames"]) == 5 * 30


def test_a_codec_hls_cannot_carry_is_refused_clearly(tmp_path):
    segmenter = HlsSegmenter(tmp_path, "x", HlsOptions(2, 60))
    with pytest.raises(HlsUnsupported, match="video codec"):
        for unit in access_units(ffmpeg_flv(seconds=2, vcodec="flv1", audio=False)):
            segmenter.write(unit)
