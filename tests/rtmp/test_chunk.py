"""Chunk stream: spec byte fixtures, limits, and property tests."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp.codec.chunk import ChunkParser, ChunkWriter, RawMessage, encode_message
from rtmp.codec.errors import LocalProtocolError, RemoteProtocolError


def parse(data, **kw):
    return ChunkParser(**kw).feed(data)


def test_spec_example_1_audio_header_compression():
    # RTMP spec 5.3.2.1: four 32-byte audio messages, fmt 0, 2, 3, 3; delta 20.
    body = [bytes([i]) * 32 for i in range(4)]
    data = (
        b"\x03" + b"\x00\x03\xe8" + b"\x00\x00\x20" + b"\x08" + (12345).to_bytes(4, "little") + body[0]
        + b"\x83" + b"\x00\x00\x14" + body[1]
        + b"\xc3" + body[2]
        + b"\xc3" + body[3]
    )  # fmt: skip
    msgs = parse(data)
    assert [m.timestamp for m in msgs] == [1000, 1020, 1040, 1060]
    assert all(m.stream_id == 12345 and m.msg_type == 8 and m.csid == 3 for m in msgs)
    assert [m.payload for m in msgs] == body


def test_spec_example_2_continuation():
    # RTMP spec 5.3.2.2: a 307-byte video message at chunk size 128: fmt 0 + two fmt 3.
    payload = bytes(range(256)) + bytes(51)
    data = (
        b"\x04" + b"\x00\x03\xe8" + b"\x00\x01\x33" + b"\x09" + (12346).to_bytes(4, "little")
        + payload[:128] + b"\xc4" + payload[128:256] + b"\xc4" + payload[256:]
    )  # fmt: skip
    assert parse(data) == [RawMessage(4, 9, 12346, 1000, payload)]
    assert (
        encode_message(csid=4, fmt=0, timestamp=1000, msg_type=9, stream_id=12346, payload=payload, chunk_size=128)
        == data
    )


def test_extended_timestamp_repeated_in_continuation():
    payload = bytes(200)
    ext = b"\x01\x00\x00\x00"
    data = (
        b"\x06" + b"\xff\xff\xff" + b"\x00\x00\xc8" + b"\x09" + b"\x01\x00\x00\x00" + ext + payload[:128]
        + b"\xc6" + ext + payload[128:]
    )  # fmt: skip
    assert parse(data) == [RawMessage(6, 9, 1, 0x01000000, payload)]
    assert (
        encode_message(csid=6, fmt=0, timestamp=0x01000000, msg_type=9, stream_id=1, payload=payload, chunk_size=128)
        == data
    )


def test_extended_delta_then_fmt3_new_message():
    header0 = b"\x06" + b"\x00\x00\x00" + b"\x00\x00\x02" + b"\x09" + b"\x01\x00\x00\x00" + b"aa"
    fmt1 = b"\x46" + b"\xff\xff\xff" + b"\x00\x00\x02" + b"\x09" + b"\x01\x00\x00\x00" + b"bb"
    fmt3 = b"\xc6" + b"\x01\x00\x00\x00" + b"cc"  # new message, repeats delta and its extended field
    msgs = parse(header0 + fmt1 + fmt3)
    assert [m.timestamp for m in msgs] == [0, 0x01000000, 0x02000000]
    assert [m.payload for m in msgs] == [b"aa", b"bb", b"cc"]


def test_chunk_size_change_mid_stream():
    payload = bytes(range(100))
    set_chunk_size = b"\x02" + b"\x00\x00\x00" + b"\x00\x00\x04" + b"\x01" + bytes(4) + b"\x00\x00\x00\x40"
    video = b"\x07" + b"\x00\x00\x0a" + b"\x00\x00\x64" + b"\x09" + b"\x01\x00\x00\x00" + payload[:64]
    video += b"\xc7" + payload[64:]
    parser = ChunkParser()
    msgs = parser.feed(set_chunk_size + video)
    assert [m.msg_type for m in msgs] == [1, 9]
    assert msgs[1].payload == payload and msgs[1].timestamp == 10
    assert parser.chunk_size == 64


def test_interleaved_chunks_of_two_messages():
    video = bytes(range(200)) + bytes(100)
    data = (
        b"\x06" + b"\x00\x00\x00" + (300).to_bytes(3, "big") + b"\x09" + b"\x01\x00\x00\x00" + video[:128]
        + b"\x04" + b"\x00\x00\x05" + b"\x00\x00\x03" + b"\x08" + b"\x01\x00\x00\x00" + b"aud"
        + b"\xc6" + video[128:256] + b"\xc6" + video[256:]
    )  # fmt: skip
    msgs = parse(data)
    assert msgs == [RawMessage(4, 8, 1, 5, b"aud"), RawMessage(6, 9, 1, 0, video)]


def test_abort_discards_partial_message():
    first_chunk = b"\x06" + b"\x00\x00\x00" + b"\x00\x00\xc8" + b"\x09" + b"\x01\x00\x00\x00" + bytes(128)
    abort = b"\x02" + bytes(3) + b"\x00\x00\x04" + b"\x02" + bytes(4) + b"\x00\x00\x00\x06"
    fresh = b"\x06" + b"\x00\x00\x01" + b"\x00\x00\x02" + b"\x09" + b"\x01\x00\x00\x00" + b"ok"
    msgs = parse(first_chunk + abort + fresh)
    assert [m.msg_type for m in msgs] == [2, 9] and msgs[1].payload == b"ok"


def test_public_abort_mid_chunk_body():
    parser = ChunkParser()
    header = b"\x06" + b"\x00\x00\x00" + b"\x00\x00\xc8" + b"\x09" + b"\x01\x00\x00\x00"
    assert parser.feed(header + bytes(50)) == []
    parser.abort(6)
    assert parser.feed(bytes(78)) == []  # rest of the aborted chunk is skipped
    fresh = b"\x06" + b"\x00\x00\x01" + b"\x00\x00\x02" + b"\x09" + b"\x01\x00\x00\x00" + b"ok"
    assert parser.feed(fresh)[0].payload == b"ok"


def test_two_and_three_byte_csids():
    for csid in (64, 69, 319, 320, 400, 65599):
        data = encode_message(csid=csid, fmt=0, timestamp=5, msg_type=8, stream_id=1, payload=b"x", chunk_size=128)
        assert parse(data) == [RawMessage(csid, 8, 1, 5, b"x")]
    assert encode_message(csid=69, fmt=0, timestamp=0, msg_type=8, stream_id=0, payload=b"", chunk_size=1)[:2] == (
        b"\x00\x05"
    )
    assert encode_message(csid=400, fmt=0, timestamp=0, msg_type=8, stream_id=0, payload=b"", chunk_size=1)[:3] == (
        b"\x01\x50\x01"
    )


def test_timestamp_wraps():
    data = b"\x04\xff\xff\xff\x00\x00\x01\x08\x00\x00\x00\x00\xff\xff\xff\xf0a" + b"\x84\x00\x00\x20b"
    assert [m.timestamp for m in parse(data)] == [0xFFFFFFF0, 0x10]


def test_zero_length_message():
    data = b"\x03\x00\x00\x00\x00\x00\x00\x14\x00\x00\x00\x00"
    assert parse(data) == [RawMessage(3, 20, 0, 0, b"")]


@pytest.mark.parametrize(
    "data",
    [
        b"\x86\x00\x00\x00",  # fmt 2 on a fresh chunk stream
        b"\xc6",  # fmt 3 on a fresh chunk stream
        b"\x02" + bytes(3) + b"\x00\x00\x04\x01" + bytes(4) + b"\x00\x00\x00\x00",  # chunk size 0
        b"\x02" + bytes(3) + b"\x00\x00\x04\x01" + bytes(4) + b"\x7f\xff\xff\xff",  # chunk size too big
        b"\x02" + bytes(3) + b"\x00\x00\x02\x01" + bytes(4) + b"\x00\x01",  # short Set Chunk Size
        b"\x06" + bytes(3) + b"\x00\x01\x00\x09" + bytes(4) + bytes(128) + b"\x06" + bytes(11),  # fmt 0 mid-message
    ],
)
def test_protocol_violations(data):
    with pytest.raises(RemoteProtocolError):
        parse(data)


def test_limits():
    with pytest.raises(RemoteProtocolError):
        parse(b"\x06" + bytes(3) + b"\x10\x00\x01\x09" + bytes(4), max_message_size=1 << 20)
    opens = b"".join(  # the first 128-byte chunk of a 300-byte message on 68 chunk streams
        encode_message(csid=c, fmt=0, timestamp=0, msg_type=9, stream_id=1, payload=bytes(300), chunk_size=128)[
            : (12 if c < 64 else 13) + 128
        ]
        for c in range(2, 70)
    )
    with pytest.raises(RemoteProtocolError, match="in progress"):
        parse(opens)
    with pytest.raises(RemoteProtocolError, match="buffered"):
        big = encode_message(csid=5, fmt=0, timestamp=0, msg_type=9, stream_id=1, payload=bytes(5000), chunk_size=128)
        parse(big[:4000], max_message_size=8192, max_buffered=1000)


def test_error_state_is_sticky():
    parser = ChunkParser()
    with pytest.raises(RemoteProtocolError):
        parser.feed(b"\xc6")
    with pytest.raises(RemoteProtocolError):
        parser.feed(b"")


def test_local_errors():
    with pytest.raises(LocalProtocolError):
        ChunkParser().set_chunk_size(0)
    with pytest.raises(LocalProtocolError):
        ChunkWriter().set_chunk_size((1 << 24) + 1)
    kw = dict(fmt=0, timestamp=0, msg_type=9, stream_id=0, payload=b"", chunk_size=128)
    with pytest.raises(LocalProtocolError):
        encode_message(csid=1, **kw)
    with pytest.raises(LocalProtocolError):
        encode_message(csid=3, **{**kw, "timestamp": -1})
    with pytest.raises(LocalProtocolError):
        encode_message(csid=3, **{**kw, "fmt": 4})


def test_writer_header_compression():
    writer = ChunkWriter(chunk_size=128)
    sizes = [len(writer.send(RawMessage(6, 8, 1, ts, b"abcd"))) for ts in (0, 20, 40, 60)]
    # fmt 0 (12+4), fmt 2 (4+4: same length/type), fmt 3 (1+4: same delta) twice
    assert sizes == [16, 8, 5, 5]
    assert len(writer.send(RawMessage(6, 8, 1, 80, b"abc"))) == 11  # new length: fmt 1 (8+3)
    assert len(writer.send(RawMessage(6, 8, 1, 10, b"abcd"))) == 16  # backwards: fmt 0
    assert len(writer.send(RawMessage(6, 8, 2, 10, b"abcd"))) == 16  # other stream: fmt 0


# --- properties -------------------------------------------------------------------

messages = st.lists(
    st.builds(
        RawMessage,
        csid=st.sampled_from([2, 3, 4, 6, 63, 64, 320, 65599]),
        msg_type=st.sampled_from([8, 9, 18, 20]),
        stream_id=st.sampled_from([0, 1, 0xFFFFFFFF]),
        timestamp=st.one_of(st.integers(0, 2000), st.integers(0xFFFF00, 0x1000100), st.integers(0, 0xFFFFFFFF)),
        payload=st.binary(max_size=700),
    ),
    max_size=12,
)


def split_feed(parser, data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in [*points, len(data)]:
        out += parser.feed(data[last:p])
        last = p
    return out


@given(messages, st.integers(1, 65536) | st.integers(1, 300), st.lists(st.integers(0, 1 << 20), max_size=20))
@settings(max_examples=200, deadline=None)
def test_writer_parser_round_trip_any_split(msgs, chunk_size, cuts):
    writer = ChunkWriter(chunk_size)
    data = b"".join(writer.send(m) for m in msgs)
    parser = ChunkParser()
    parser.set_chunk_size(chunk_size)
    assert split_feed(parser, data, cuts) == msgs


@st.composite
def fmt1_chains(draw):
    """Per csid: a fmt 0 message then fmt 1 messages with arbitrary deltas."""
    chains = []
    for csid in draw(st.lists(st.sampled_from([3, 4, 6, 7, 100]), unique=True, min_size=1, max_size=3)):
        stream_id = draw(st.integers(0, 10))
        ts = draw(st.integers(0, 0xFFFFFFFF))
        chain = [("abs", ts, RawMessage(csid, 9, stream_id, ts, draw(st.binary(max_size=300))))]
        for _ in range(draw(st.integers(0, 4))):
            delta = draw(st.integers(0, 100) | st.integers(0xFFFFF0, 0x1000010) | st.integers(0, 0xFFFFFFFF))
            ts = (ts + delta) & 0xFFFFFFFF
            chain.append(("delta", delta, RawMessage(csid, draw(st.sampled_from([8, 9])), stream_id, ts,
                                                     draw(st.binary(max_size=300)))))  # fmt: skip
        chains.append(chain)
    return chains


def frame(kind, value, msg, chunk_size):
    return encode_message(
        csid=msg.csid,
        fmt=0 if kind == "abs" else 1,
        timestamp=value,
        msg_type=msg.msg_type,
        stream_id=msg.stream_id,
        payload=msg.payload,
        chunk_size=chunk_size,
    )


@given(fmt1_chains(), st.integers(1, 65536) | st.integers(1, 64), st.randoms(use_true_random=False))
@settings(max_examples=200, deadline=None)
def test_encode_message_chains_parse_back(chains, chunk_size, rnd):
    parser = ChunkParser()
    parser.set_chunk_size(chunk_size)
    expected = {}
    queues = []
    for chain in chains:
        queue = []
        for kind, value, msg in chain:
            data = frame(kind, value, msg, chunk_size)
            queue += split_message(data, msg, kind, value, chunk_size)
        queues.append(queue)
        expected[chain[0][2].csid] = [m for _, _, m in chain]
    # interleave chunks of different chunk streams, keeping each stream's order
    stream = []
    while queues:
        q = rnd.choice(queues)
        stream.append(q.pop(0))
        if not q:
            queues.remove(q)
    got = {}
    for m in parser.feed(b"".join(stream)):
        got.setdefault(m.csid, []).append(m)
    assert got == expected


def split_message(data, msg, kind, value, chunk_size):
    csid_len = 1 if msg.csid < 64 else 2 if msg.csid < 320 else 3
    ext = 4 if value >= 0xFFFFFF else 0
    header = csid_len + (11 if kind == "abs" else 7) + ext
    body = msg.payload
    pieces = [data[: header + min(chunk_size, len(body))]]
    pos, done = len(pieces[0]), min(chunk_size, len(body))
    while done < len(body):
        n = min(chunk_size, len(body) - done)
        pieces.append(data[pos : pos + csid_len + ext + n])
        pos += csid_len + ext + n
        done += n
    assert pos == len(data)
    return pieces
