"""Real clients' RTMP conversations with our server, replayed through the sans-I/O codec (bytes only).

The fixtures in tests/rtmp/captures/ were recorded once by captures/record.py (see its docstring to re-record):
ffmpeg publishing and playing, GStreamer's librtmp `rtmpsink` and its own `rtmp2sink` publishing, each ~2.5 s of
320x240 H.264 + AAC. Each NAME has NAME.c2s.bin.gz (client -> server), NAME.s2c.bin.gz and NAME.json (the client,
its version and command line, and the frames it says it sent or received).

What is checked:
- fed whole, the client's bytes go through ServerConnection (and a player's received bytes through ClientConnection,
  as bench/rtmpclient.py uses it) with no codec error, and give what a user cares about: connect to app `live`,
  createStream, publish (or play) of the right name, exactly the client's count of coded video and audio frames, one
  AVC sequence header (SPS with the picture size) and one AAC AudioSpecificConfig ahead of the frames, the frames'
  timestamps spanning their frame count at the source's rate;
- fed in two pieces, split at every offset of the first 64 KiB (see test_split_in_two_at_every_offset), and one byte
  at a time: the same events as fed whole.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from media.codecs import aac, avc
from rtmp.codec import message as msg
from rtmp.codec.connection import ClientConnection, ServerConnection
from rtmp.codec.errors import RtmpProtocolError

CAPTURES = Path(__file__).parent / "captures"
PUBLISHERS = ["ffmpeg_publish", "gst_rtmpsink_publish", "gst_rtmp2sink_publish"]
PLAYERS = ["ffmpeg_play"]
SPLIT_LIMIT = 64 << 10
# See test_split_in_two_at_every_offset: each offset is checked in its WINDOW, and the literal split (a fresh
# connection, data[:k] then data[k:64 KiB]) runs at every LITERAL_STRIDE-th offset (~0.3 s; every offset: ~190 s).
WINDOW = 128
LITERAL_STRIDE = int(os.environ.get("RTMP_CAPTURES_LITERAL_STRIDE", "1021"))

# What the FLV muxers add to the frames they count (the GStreamer sidecars count every tag; ffmpeg counts packets):
# ffmpeg's FLV muxer writes the AVC and AAC sequence headers from the codec config and an AVC end of sequence in
# its trailer; ffmpeg's FLV demuxer (the player) takes the sequence headers as codec config, not packets.
FFMPEG_PUBLISH_EXTRA = {"video_sequence_headers": 1, "audio_sequence_headers": 1, "video_end_of_sequence": 1,
                        "script_tags": 1}
FFMPEG_PLAY_EXTRA = {"video_sequence_headers": 1, "audio_sequence_headers": 1, "video_end_of_sequence": 0,
                     "script_tags": 1}


@dataclass(frozen=True)
class Capture:
    name: str
    info: dict
    c2s: bytes
    s2c: bytes

    @property
    def expected(self) -> dict[str, int]:
        """Messages the client sent (publish) or the server sent it (play), by kind."""
        counts = dict(self.info.get("sent") or self.info["received"])
        if self.info["client"] == "ffmpeg":
            counts = {**(FFMPEG_PUBLISH_EXTRA if self.info["role"] == "publish" else FFMPEG_PLAY_EXTRA), **counts}
        return counts


@cache
def load(name: str) -> Capture:
    info = json.loads((CAPTURES / f"{name}.json").read_text())
    c2s, s2c = (gzip.decompress((CAPTURES / f"{name}.{d}.bin.gz").read_bytes()) for d in ("c2s", "s2c"))
    assert (len(c2s), len(s2c)) == (info["c2s_bytes"], info["s2c_bytes"])
    return Capture(name, info, c2s, s2c)


def client_side() -> ClientConnection:
    """The codec of a client that read these bytes (its own C0/C1 and connect are not part of them)."""
    conn = ClientConnection()
    conn.connect("live", "rtmp://127.0.0.1/live")
    return conn


def feed_whole(conn: ServerConnection | ClientConnection, data: bytes) -> list:
    events = conn.receive_data(data)
    assert conn.handshake_done
    return events + conn.receive_data(b"")


# --- what the media says -------------------------------------------------------------------------------------------


def video_kind(event: msg.VideoData) -> str:
    assert event.payload[0] & 0x0F == 7, "AVC"
    return {0: "video_sequence_headers", 1: "video_frames", 2: "video_end_of_sequence"}[event.payload[1]]


def audio_kind(event: msg.AudioData) -> str:
    assert event.payload[0] >> 4 == 10, "AAC"
    return {0: "audio_sequence_headers", 1: "audio_frames"}[event.payload[1]]


def media_counts(events: list) -> dict[str, int]:
    counts = dict.fromkeys(["video_frames", "audio_frames", "video_sequence_headers", "audio_sequence_headers",
                            "video_end_of_sequence", "script_tags"], 0)
    for e in events:
        kind = video_kind(e) if isinstance(e, msg.VideoData) else audio_kind(e) if isinstance(e, msg.AudioData) else \
            "script_tags" if isinstance(e, msg.Metadata) else None
        if kind:
            counts[kind] += 1
    return counts


def check_media(capture: Capture, events: list, stream_id: int) -> None:
    info = capture.info
    video = [e for e in events if isinstance(e, msg.VideoData)]
    audio = [e for e in events if isinstance(e, msg.AudioData)]
    assert {e.stream_id for e in video + audio} == {stream_id}
    counts = media_counts(events)
    assert counts == {k: capture.expected.get(k, 0) for k in counts}, capture.expected

    # Sequence headers come before the first frame and say what the client encoded.
    assert video_kind(video[0]) == "video_sequence_headers" and audio_kind(audio[0]) == "audio_sequence_headers"
    config = avc.decoder_config_parse(video[0].payload[5:])
    assert config.sps and config.pps and config.length_size == 4
    sps = avc.sps_parse(config.sps[0])
    assert (sps.width, sps.height) == (info["video"]["width"], info["video"]["height"])
    asc = aac.config_parse(audio[0].payload[2:])
    assert (asc.object_type, asc.sample_rate, asc.channels) == (2, info["audio"]["sample_rate"],
                                                                info["audio"]["channels"])

    # Frames: a keyframe first, one per second (every client was asked for a 1-s GOP), and timestamps (DTS) that
    # never go back and span the frame count at the source's rate, to the millisecond of FLV's rounding.
    frames = [e for e in video if video_kind(e) == "video_frames"]
    assert frames[0].payload[0] >> 4 == 1
    fps = info["video"]["fps"]
    assert sum(e.payload[0] >> 4 == 1 for e in frames) == math.ceil(len(frames) / fps)
    samples = [e for e in audio if audio_kind(e) == "audio_frames"]
    for stream, duration in ((frames, 1000 / fps), (samples, 1024_000 / info["audio"]["sample_rate"])):
        stamps = [e.timestamp for e in stream]
        assert stamps == sorted(stamps)
        assert abs(stamps[-1] - stamps[0] - (len(stamps) - 1) * duration) <= 1.5
    metadata = next(e for e in events if isinstance(e, msg.Metadata))
    assert (metadata.values["width"], metadata.values["height"]) == (info["video"]["width"], info["video"]["height"])


def index(events: list, kind: type, check: Callable[[object], bool] = lambda e: True) -> int:
    found = [i for i, e in enumerate(events) if isinstance(e, kind) and check(e)]
    assert len(found) == 1, (kind.__name__, found)
    return found[0]


def status_codes(events: list) -> list[str]:
    return [e.info["code"] for e in events if isinstance(e, msg.Status)]


# --- fed whole -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PUBLISHERS)
def test_publisher_fed_whole(name: str) -> None:
    capture = load(name)
    stream = capture.info["stream"]
    events = feed_whole(ServerConnection(), capture.c2s)
    answers = feed_whole(client_side(), capture.s2c)  # what our server answered, through the client codec
    assert not [e for e in answers if isinstance(e, msg.Error)]

    connect = events[index(events, msg.Connect)]
    assert connect.app == "live" and connect.tc_url.endswith("/live")
    release, fc_publish = (events[index(events, kind)] for kind in (msg.ReleaseStream, msg.FCPublish))
    assert release.name == fc_publish.name == stream
    create = index(events, msg.CreateStream)
    created = next(e for e in answers
                   if isinstance(e, msg.Result) and e.transaction_id == events[create].transaction_id)
    stream_id = int(created.values[1])
    publish = index(events, msg.Publish)
    assert events[publish] == msg.Publish(events[publish].transaction_id, stream_id, stream, "live")
    assert status_codes(answers) == ["NetStream.Publish.Start"]
    assert index(events, msg.Connect) < create < publish < min(i for i, e in enumerate(events) if isinstance(
        e, (msg.VideoData, msg.AudioData, msg.Metadata)))

    check_media(capture, events, stream_id)

    # The client says goodbye after its last frame, then closes. rtmp2sink's deleteStream names the stream instead
    # of giving its id (`deleteStream 0 null "<key>"`): not a number, it decodes as 0 (our server has ended the
    # publish at msg.FCUnpublish already).
    assert events[index(events, msg.FCUnpublish)].name == stream
    done = index(events, msg.DeleteStream)
    assert events[done].stream_id_to_delete == (0 if name == "gst_rtmp2sink_publish" else stream_id)
    assert not [e for e in events[done:] if isinstance(e, (msg.VideoData, msg.AudioData))]
    assert isinstance(events[-1], msg.ConnectionClosed)


@pytest.mark.parametrize("name", PLAYERS)
def test_player_fed_whole(name: str) -> None:
    capture = load(name)
    stream = capture.info["stream"]
    requests = feed_whole(ServerConnection(), capture.c2s)
    connect = requests[index(requests, msg.Connect)]
    assert connect.app == "live" and connect.tc_url.endswith("/live")
    create = index(requests, msg.CreateStream)
    play = index(requests, msg.Play)
    assert create < play and requests[play].name == stream

    events = feed_whole(client_side(), capture.s2c)  # what the player received
    assert not [e for e in events if isinstance(e, msg.Error)]
    connected = events[index(events, msg.Result, lambda e: e.transaction_id == connect.transaction_id)]
    assert connected.values[1]["code"] == "NetConnection.Connect.Success"
    created = events[index(events, msg.Result, lambda e: e.transaction_id == requests[create].transaction_id)]
    stream_id = int(created.values[1])
    assert requests[play].stream_id == stream_id
    assert status_codes(events) == ["NetStream.Play.Reset", "NetStream.Play.Start", "NetStream.Data.Start",
                                    "NetStream.Play.UnpublishNotify"]
    assert events[index(events, msg.DataMessage)].name == "|RtmpSampleAccess"
    begin = index(events, msg.UserControl, lambda e: e.event_type == msg.STREAM_BEGIN)
    eof = index(events, msg.UserControl, lambda e: e.event_type == msg.STREAM_EOF)
    media = [i for i, e in enumerate(events) if isinstance(e, (msg.VideoData, msg.AudioData))]
    assert begin < media[0] and media[-1] < eof and events[eof].stream_id == stream_id

    check_media(capture, events, stream_id)
    assert isinstance(events[-1], msg.ConnectionClosed)


# --- fed in pieces -------------------------------------------------------------------------------------------------

STREAMS = [(name, "c2s") for name in PUBLISHERS + PLAYERS] + [(name, "s2c") for name in PUBLISHERS + PLAYERS]


def new_conn(direction: str) -> ServerConnection | ClientConnection:
    return ServerConnection() if direction == "c2s" else client_side()


def frozen(conn: ServerConnection | ClientConnection) -> bytes:
    """The codec's whole state, as bytes to compare (pickle: the same state pickles to the same bytes).

    Left out, as dead values: what the codec has to send (drained: the server's S1/S2 are random); the handshake's
    `leftover`, the bytes that followed it in the read that completed it, which the connection reads once, then;
    and, between chunks (no chunk body pending), the chunk stream the last chunk body went to, which is read only
    while a body is pending (a message that arrived whole in one read never sets it).
    """
    conn.data_to_send()
    conn._handshake.leftover = b""
    parser = conn._parser
    if not parser._left:
        parser._cur, parser._cur_csid = None, 0
    return pickle.dumps(conn)


def digest(events: list) -> list[tuple]:
    """A cheap picture of an event list for failure messages."""
    return [(type(e).__name__, getattr(e, "stream_id", None), getattr(e, "timestamp", None),
             len(getattr(e, "payload", b"")), zlib.crc32(getattr(e, "payload", b""))) for e in events]


@pytest.mark.parametrize(("name", "direction"), STREAMS, ids=[f"{n}-{d}" for n, d in STREAMS])
def test_split_in_two_at_every_offset(name: str, direction: str) -> None:
    """Every offset k of the first 64 KiB as the end of a read, checked against one-call parses.

    S(b), E(b): the state and events of a fresh connection fed data[:b] in one call, for b = 0, WINDOW, 2 WINDOW...
    For each k in [b, b + WINDOW): S(b) fed data[b:k] then data[k:b + WINDOW] must give the events E(b + WINDOW)
    adds to E(b) and end in exactly S(b + WINDOW), the codec's whole state (partial headers and messages included),
    so whatever it does with the bytes after, it does as the one-call parse does. Against the literal split (a
    fresh connection fed data[:k] then data[k:64 KiB]), the first read starts at b, not 0, and the second stops at
    the window's end, where the states are compared instead of parsing on; k = 64 KiB is the one-call parse. The
    literal form at every offset costs ~190 s here (0.4-1.1 ms an offset), so it runs at every LITERAL_STRIDE-th
    offset (RTMP_CAPTURES_LITERAL_STRIDE=1: at all of them).
    """
    data = getattr(load(name), direction)[:SPLIT_LIMIT]
    n = len(data)
    starts = [*range(0, n, WINDOW), n]
    states, events = [], []
    for b in starts:
        conn = new_conn(direction)
        events.append(conn.receive_data(data[:b]) if b else [])
        states.append(frozen(conn))
    whole = events[-1]
    assert any(isinstance(e, (msg.VideoData, msg.AudioData)) for e in whole) or n < SPLIT_LIMIT
    for i, b in enumerate(starts[:-1]):
        end = starts[i + 1]
        assert events[i] == whole[: len(events[i])], f"the one-call parse of data[:{b}] is not a prefix of the whole"
        want, want_state = whole[len(events[i]) : len(events[i + 1])], states[i + 1]
        for k in range(b, end):
            conn = pickle.loads(states[i])
            try:
                got = conn.receive_data(data[b:k]) if k > b else []
                got += conn.receive_data(data[k:end])
            except RtmpProtocolError as exc:
                pytest.fail(f"split at {k} (from {b}, to {end}): {exc!r}")
            if got != want:
                pytest.fail(f"split at {k} (from {b}, to {end}): events {digest(got)} != {digest(want)}")
            if frozen(conn) != want_state:
                pytest.fail(f"split at {k} (from {b}, to {end}): the codec's state differs from the one-call parse's")

    for k in range(0, n + 1, LITERAL_STRIDE):
        conn = new_conn(direction)
        try:
            got = (conn.receive_data(data[:k]) if k else []) + (conn.receive_data(data[k:]) if k < n else [])
        except RtmpProtocolError as exc:
            pytest.fail(f"literal split at {k}: {exc!r}")
        assert got == whole, f"literal split at {k}: events {digest(got)} != {digest(whole)}"


@pytest.mark.parametrize(("name", "direction"), STREAMS, ids=[f"{n}-{d}" for n, d in STREAMS])
def test_one_byte_at_a_time(name: str, direction: str) -> None:
    data = getattr(load(name), direction)
    whole = new_conn(direction).receive_data(data)
    conn = new_conn(direction)
    got = [e for i in range(len(data)) for e in conn.receive_data(data[i : i + 1])]
    assert got == whole
