"""FLV: payload classification, codec configs, SPS size, framing; checked against PyAV/ffmpeg output."""

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.codecs import avc
from media.codecs.errors import MalformedData
from media.codecs.flv import (
    FLV_HEADER_AUDIO_VIDEO,
    AudioInfo,
    FlvReader,
    FlvTag,
    VideoInfo,
    flv_header,
    flv_tag,
    flv_tag_header,
    parse_audio,
    parse_video,
)
from media.codecs.flv_units import FlvUnits
from rtmp.codec import amf0


def ffmpeg_flv(width, height):
    """A short FLV made by ffmpeg's libraries (libx264 + aac)."""
    av = pytest.importorskip("av")
    buf = io.BytesIO()
    out = av.open(buf, "w", format="flv")
    video = out.add_stream("libx264", rate=30)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.options = {"preset": "ultrafast"}
    audio = out.add_stream("aac", rate=44100)
    audio.layout = "stereo"
    for i in range(5):
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.pts = i
        for packet in video.encode(frame):
            out.mux(packet)
        sound = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
        for plane in sound.planes:
            plane.update(bytes(plane.buffer_size))
        sound.sample_rate, sound.pts = 44100, i * 1024
        for packet in audio.encode(sound):
            out.mux(packet)
    for stream in (video, audio):
        for packet in stream.encode():
            out.mux(packet)
    out.close()
    return buf.getvalue()


@pytest.mark.parametrize("size", [(642, 362), (1280, 720), (320, 240)])
def test_ffmpeg_flv_end_to_end(size):
    data = ffmpeg_flv(*size)
    reader = FlvReader()
    tags = [tag for i in range(0, len(data), 100) for tag in reader.feed(data[i : i + 100])]
    assert reader.has_audio and reader.has_video
    script = [t for t in tags if t.tag_type == 18][0]
    name, meta = amf0.decode_all(script.payload)
    assert name == "onMetaData" and meta["width"] == size[0]
    videos = [t for t in tags if t.tag_type == 9]
    header = parse_video(videos[0].payload)
    assert header == VideoInfo("h264", True, True, False, 0, False)
    config = avc.decoder_config_parse(videos[0].payload[5:])
    assert len(config.sps) == 1 and len(config.pps) == 1 and config.length_size == 4
    assert (avc.sps_parse(config.sps[0]).width, avc.sps_parse(config.sps[0]).height) == size
    keyframe = parse_video(videos[1].payload)
    assert keyframe.keyframe and not keyframe.is_sequence_header
    annexb = avc.avcc_to_annexb(videos[1].payload[5:])
    assert annexb.startswith(b"\x00\x00\x00\x01")
    audios = [t for t in tags if t.tag_type == 8]
    assert parse_audio(audios[0].payload) == AudioInfo("aac", True)
    assert parse_audio(audios[1].payload) == AudioInfo("aac", False)
    assert audios[0].payload[2:4] == bytes.fromhex("1210")  # AAC-LC 44.1k stereo


def test_legacy_video():
    assert parse_video(b"\x27\x01\xff\xff\xfe") == VideoInfo("h264", False, False, False, -2, False)
    assert parse_video(b"\x17\x02\x00\x00\x00") == VideoInfo("h264", True, False, True, 0, False)
    assert parse_video(b"\x1c\x00\x00\x00\x00").codec == "hevc"
    assert parse_video(b"\x22").codec == "unknown"  # Sorenson H.263: one byte is enough


def test_enhanced_video():
    assert parse_video(b"\x90hvc1" + b"\x01\x02") == VideoInfo("hevc", True, True, False, 0, True)
    assert parse_video(b"\xa1hvc1\x00\x00\x10nal") == VideoInfo("hevc", False, False, False, 16, True)
    assert parse_video(b"\x93av01nal") == VideoInfo("av1", True, False, False, 0, True)
    assert parse_video(b"\x91vp09nal").composition_time == 0  # no composition time for VP9
    assert parse_video(b"\x92avc1").is_end_of_sequence
    assert parse_video(b"\x95av01").is_sequence_header
    assert parse_video(b"\x94hvc1").codec == "hevc"


def test_enhanced_avc_sequence_start():
    record = bytes.fromhex("01640028ffe10004") + b"\x67abc" + b"\x01\x00\x02" + b"\x68x"
    unit = FlvUnits().video(b"\x90avc1" + record, 0)
    assert (unit.codec, unit.config, unit.payload) == ("h264", True, record)


def test_audio():
    assert parse_audio(b"\x2f\xff") == AudioInfo("mp3", False)
    assert parse_audio(b"\x90Opus") == AudioInfo("opus", True)
    assert parse_audio(b"\x91Opus") == AudioInfo("opus", False)
    unit = FlvUnits().audio(b"\x90mp4a\x12\x10", 0)
    assert (unit.codec, unit.config, unit.payload) == ("aac", True, b"\x12\x10")


@pytest.mark.parametrize(
    "call",
    [
        lambda: parse_video(b""),
        lambda: parse_video(b"\x17\x00"),
        lambda: parse_video(b"\x90hv"),
        lambda: parse_video(b"\xa1hvc1\x00"),
        lambda: parse_audio(b""),
        lambda: parse_audio(b"\xaf"),
        lambda: FlvReader().feed(b"GET / HTTP/1.1"),
        lambda: FlvUnits().video(b"\x17\x00\x00\x00\x00\x01\x64\x00\x28\xfe\xe1\x00\x09abc", 0),  # size 3
    ],
)
def test_malformed(call):
    with pytest.raises(MalformedData):
        call()


def test_framing():
    assert FLV_HEADER_AUDIO_VIDEO == bytes.fromhex("464c5601050000000900000000")
    assert flv_header(audio=False, video=True)[4] == 0x01
    header = flv_tag_header(9, 0x12345678, 300)
    assert header == bytes.fromhex("0900012c345678120000 00".replace(" ", ""))
    tag = flv_tag(8, 5, b"abc")
    assert tag == flv_tag_header(8, 5, 3) + b"abc" + (14).to_bytes(4, "big")


@given(
    st.lists(st.tuples(st.sampled_from([8, 9, 18]), st.integers(0, 0xFFFFFFFF), st.binary(max_size=300)), max_size=10),
    st.integers(1, 64),
)
def test_reader_round_trip(tags, step):
    data = FLV_HEADER_AUDIO_VIDEO + b"".join(flv_tag(*t) for t in tags)
    reader = FlvReader()
    got = [tag for i in range(0, len(data), step) for tag in reader.feed(data[i : i + step])]
    assert got == [FlvTag(*t) for t in tags]
