"""Fuzz: arbitrary or mutated input only ever raises RtmpProtocolError, and quickly."""

import os
import random
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media.codecs.errors import CodecError
from media.codecs.flv import FLV_HEADER_AUDIO_VIDEO, FlvReader, parse_audio, parse_video
from rtmp.codec import amf0
from rtmp.codec.chunk import ChunkParser, encode_message
from rtmp.codec.connection import ClientConnection, ServerConnection
from rtmp.codec.errors import RtmpProtocolError
from rtmp.codec.handshake import ClientHandshake

from .test_connection import SESSION

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HANDSHAKE_LEN = 1 + 2 * 1536


def feed_pieces(receive, data, cuts=()):
    """Feed data in pieces; returns normally or with an RtmpProtocolError (CodecError: FLV payloads)."""
    last = 0
    try:
        for p in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
            if p > last:
                receive(data[last:p])
                last = p
    except (RtmpProtocolError, CodecError):
        pass


def handshaken_server():
    server = ServerConnection()
    client = ClientHandshake()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    assert server.handshake_done
    return server


def handshaken_client():
    client, server = ClientConnection(), ServerConnection()
    server.receive_data(client.connect("live", "rtmp://h/live"))
    client.receive_data(server.data_to_send())
    return client


@FUZZ
@given(st.binary(max_size=4000), st.lists(st.integers(0, 4000), max_size=5))
def test_server_random_bytes(data, cuts):
    feed_pieces(ServerConnection().receive_data, b"\x03" + data, cuts)
    feed_pieces(ServerConnection().receive_data, data, cuts)


@FUZZ
@given(st.binary(max_size=4000), st.lists(st.integers(0, 4000), max_size=5))
def test_server_random_bytes_after_handshake(data, cuts):
    feed_pieces(handshaken_server().receive_data, data, cuts)


@FUZZ
@given(st.binary(max_size=4000))
def test_client_random_bytes_after_handshake(data):
    feed_pieces(handshaken_client().receive_data, data)


mutations = st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete", "set"]), st.integers(0, len(SESSION)), st.integers(0, 255)),
    min_size=1,
    max_size=8,
)


def mutate(data, ops):
    buf = bytearray(data)
    for op, pos, value in ops:
        pos = HANDSHAKE_LEN + pos % max(1, len(buf) - HANDSHAKE_LEN)  # keep the handshake valid
        if op == "flip":
            buf[pos % len(buf)] ^= 1 << (value % 8)
        elif op == "insert":
            buf[pos:pos] = bytes([value])
        elif op == "delete":
            del buf[pos : pos + 1 + value % 16]
        else:
            buf[pos % len(buf)] = value
    return bytes(buf)


@FUZZ
@given(mutations, st.lists(st.integers(0, len(SESSION)), max_size=4))
def test_server_mutated_session(ops, cuts):
    feed_pieces(ServerConnection().receive_data, mutate(SESSION, ops), cuts)


@FUZZ
@given(st.binary(max_size=4000), st.integers(1, 300))
def test_chunk_parser_random(data, chunk_size):
    parser = ChunkParser()
    parser.set_chunk_size(chunk_size)
    feed_pieces(parser.feed, data)


@FUZZ
@given(st.binary(max_size=2000))
def test_amf0_random(data):
    feed_pieces(amf0.decode_all, data)


@FUZZ
@given(st.binary(max_size=64))
def test_media_payload_random(data):
    feed_pieces(parse_video, data)
    feed_pieces(parse_audio, data)


@FUZZ
@given(st.binary(max_size=2000))
def test_flv_reader_random(data):
    feed_pieces(FlvReader().feed, data)
    feed_pieces(FlvReader().feed, FLV_HEADER_AUDIO_VIDEO + data)


def test_one_megabyte_random_input_is_fast():
    rng = random.Random(1234)
    blobs = [os.urandom(1 << 20), rng.randbytes(1 << 20), bytes([0x03]) + rng.randbytes(1 << 20)]
    for blob in blobs:
        start = time.monotonic()
        feed_pieces(ServerConnection().receive_data, blob)
        feed_pieces(handshaken_server().receive_data, blob)
        feed_pieces(ChunkParser().feed, blob)
        feed_pieces(amf0.decode_all, blob)
        feed_pieces(FlvReader().feed, FLV_HEADER_AUDIO_VIDEO + blob)
        feed_pieces(parse_video, blob)
        feed_pieces(parse_audio, blob)
        assert time.monotonic() - start < 2.0


def test_one_megabyte_of_valid_chunks_is_fast():
    # Worst case for the parser: 1 MB of tiny well-formed chunks (chunk size 1).
    parser = ChunkParser()
    parser.set_chunk_size(1)
    data = encode_message(csid=6, fmt=0, timestamp=0, msg_type=9, stream_id=1, payload=bytes(500_000), chunk_size=1)
    start = time.monotonic()
    (msg,) = parser.feed(data)
    assert len(msg.payload) == 500_000
    assert time.monotonic() - start < 5.0
