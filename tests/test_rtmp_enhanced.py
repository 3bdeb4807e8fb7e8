"""Enhanced RTMP (the FourCC video headers OBS 30+ sends for HEVC and AV1) passes through the
hub to RTMP and HTTP-FLV viewers, with the keyframe flag driving the GOP cache.

ffmpeg 5.1 (Debian 12) cannot push or read Enhanced RTMP, so the tags are built here and what
the viewers get is compared with what was sent: the same codec, frames and keyframe flags, each
frame's bytes untouched. The tag header is written canonically (HEVC coded frames always carry
their composition time, AV1's never do), so a CodedFramesX tag comes back as CodedFrames."""
from __future__ import annotations

import asyncio

import pytest

from media.codecs.flv import FlvReader
from media.codecs.flv_units import FlvUnits
from rtmp.codec.message import CSID_VIDEO, VIDEO, VideoData
from tests.media.fakes import RtmpTestClient
from tests.test_rtmp_server import plane_and_control, wait_for  # noqa: F401  (fixture)

SEQUENCE_START, CODED_FRAMES, CODED_FRAMES_X = 0, 1, 3


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: these tests need no Django."""


def enhanced(fourcc: bytes, packet_type: int, keyframe: bool, body: bytes) -> bytes:
    frame_type = 1 if keyframe else 2
    return bytes([0x80 | frame_type << 4 | packet_type]) + fourcc + body


def hevc_stream(fourcc: bytes, seconds: int = 3) -> list[tuple[int, bytes, bool]]:
    units = [(0, enhanced(fourcc, SEQUENCE_START, True, b"\x01config-record"), False)]
    for frame in range(seconds * 30):
        keyframe = frame % 30 == 0
        timestamp = frame * 33
        packet = CODED_FRAMES_X if frame % 2 else CODED_FRAMES
        body = (b"" if packet == CODED_FRAMES_X else b"\x00\x00\x00") + frame.to_bytes(4, "big") * 20
        units.append((timestamp, enhanced(fourcc, packet, keyframe, body), keyframe))
    return units


def frames(bodies: list[bytes]) -> list[tuple[str, bool, bool, bytes]]:
    """(codec, keyframe, config, frame bytes) of each tag body, whatever its packet type."""
    mapping = FlvUnits()
    units = [mapping.video(body, 0) for body in bodies]
    return [(u.codec, u.keyframe, u.config, u.payload) for u in units if u is not None]


@pytest.mark.parametrize("fourcc", [b"hvc1", b"av01"])
async def test_enhanced_video_reaches_rtmp_and_flv_viewers_byte_for_byte(plane_and_control, fourcc):  # noqa: F811
    plane, _ = plane_and_control
    publisher = await RtmpTestClient.connect(plane.rtmp_port)
    assert (await publisher.publish("k1")).info["code"] == "NetStream.Publish.Start"
    units = hevc_stream(fourcc)
    conn, sid = publisher.conn, publisher.stream_id
    first_half = units[:45]
    publisher.send(b"".join(conn.send_message(CSID_VIDEO, VIDEO, sid, ts, body) for ts, body, _ in first_half))
    await wait_for(lambda: (s := plane.registry.get("room1")) is not None and s.units_in >= 45)

    player = await RtmpTestClient.connect(plane.rtmp_port)
    assert (await player.play("room1")).info["code"] == "NetStream.Play.Start"
    reader, writer = await asyncio.open_connection("127.0.0.1", plane.http_port)
    writer.write(b"GET /flv/room1.flv HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.1)

    publisher.send(b"".join(conn.send_message(CSID_VIDEO, VIDEO, sid, ts, body) for ts, body, _ in units[45:]))
    last = units[-1][1]
    await player.until(lambda e: isinstance(e, VideoData) and frames([e.payload]) == frames([last]))
    got = [e.payload for e in player.events if isinstance(e, VideoData)]
    # the late joiner gets the sequence header, then the last keyframe's GOP, then live frames
    assert got[0] == units[0][1]
    keyframe_index = max(i for i, (_, _, key) in enumerate(units[:45]) if key)
    assert frames(got[1:]) == frames([body for _, body, _ in units[keyframe_index:]])
    assert {codec for codec, *_ in frames(got)} == {"hevc" if fourcc == b"hvc1" else "av1"}

    publisher.close()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    body = raw.split(b"\r\n\r\n", 1)[1]
    flv_bytes = b""
    while body:  # undo the chunked transfer coding
        size_line, body = body.split(b"\r\n", 1)
        size = int(size_line, 16)
        flv_bytes, body = flv_bytes + body[:size], body[size + 2:]
    tags = [tag.payload for tag in FlvReader().feed(flv_bytes) if tag.tag_type == VIDEO]
    assert tags[0] == units[0][1] and frames(tags[-1:]) == frames([last])
