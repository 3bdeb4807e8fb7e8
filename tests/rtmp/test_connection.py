"""Connections: an ffmpeg/OBS-like publish session, a play session, control messages."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp.codec import amf0
from rtmp.codec.chunk import ChunkParser
from rtmp.codec.connection import ClientConnection, ServerConnection
from rtmp.codec.errors import LocalProtocolError, RemoteProtocolError
from rtmp.codec.message import (
    ACK,
    AUDIO,
    COMMAND_AMF3,
    CSID_AUDIO,
    CSID_VIDEO,
    PING_RESPONSE,
    STREAM_BEGIN,
    USER_CONTROL,
    VIDEO,
    AudioData,
    CloseStream,
    Connect,
    ConnectionClosed,
    CreateStream,
    DataMessage,
    DeleteStream,
    Error,
    FCPublish,
    FCUnpublish,
    Metadata,
    OtherCommand,
    Play,
    Publish,
    ReleaseStream,
    Result,
    Status,
    UserControl,
    VideoData,
)

AVC_HEADER = bytes.fromhex("1700000000014d401fffe1000a674d401fe8802d8088f001000468ee3c80")
AAC_HEADER = bytes.fromhex("af001210")
METADATA = {"width": 1280.0, "height": 720.0, "framerate": 30.0, "videocodecid": 7.0, "encoder": "Lavf61"}


def connected_pair(**server_kw):
    """Client and server after handshake + connect/accept; returns (client, server, connect event)."""
    client, server = ClientConnection(), ServerConnection(**server_kw)
    assert server.receive_data(client.connect("live", "rtmp://127.0.0.1/live")) == []
    assert client.receive_data(server.data_to_send()) == []
    events = server.receive_data(client.data_to_send())
    (connect,) = events
    results = client.receive_data(server.accept_connect(connect.transaction_id))
    assert results[0].transaction_id == 1.0
    return client, server, connect


def frames():
    """(type, timestamp, payload) like an encoder: headers, a big keyframe, interleaved audio."""
    yield VIDEO, 0, AVC_HEADER
    yield AUDIO, 0, AAC_HEADER
    for i in range(12):
        ts = i * 33
        if i % 6 == 0:
            yield VIDEO, ts, b"\x17\x01\x00\x00\x00" + bytes([i]) * 20000  # keyframe, many chunks
        else:
            yield VIDEO, ts, b"\x27\x01\x00\x00\x21" + bytes([i]) * (300 + i)
        yield AUDIO, ts + 10, b"\xaf\x01" + bytes([i]) * 200


def publish_session(client, server):
    """Drive an ffmpeg-like publish; return everything the client sent after connect, and events."""
    sent, events = b"", []

    def send(data):
        nonlocal sent
        sent += data
        events.extend(server.receive_data(data))

    send(client.set_chunk_size(60000))
    send(client.command("releaseStream", None, "cam"))
    send(client.command("FCPublish", None, "cam"))
    send(client.create_stream())
    tid = client.last_transaction_id
    client.receive_data(server.create_stream_result(tid, 1))
    send(client.publish(1, "cam"))
    send(client.metadata(1, METADATA))
    for msg_type, ts, payload in frames():
        csid = CSID_VIDEO if msg_type == VIDEO else CSID_AUDIO
        send(client.send_message(csid, msg_type, 1, ts, payload))
    send(client.command("FCUnpublish", None, "cam"))
    send(client.delete_stream(1))
    return sent, events


def test_publish_session_events():
    client, server, connect = connected_pair()
    assert connect == Connect(1.0, "live", "rtmp://127.0.0.1/live", connect.properties)
    assert connect.properties["flashVer"].startswith("FMLE/3.0")
    assert client.peer_window_ack_size == 2_500_000 and client.peer_bandwidth == 2_500_000
    assert server.out_chunk_size == 4096
    _, events = publish_session(client, server)
    assert events[:4] == [
        ReleaseStream(2.0, "cam"),
        FCPublish(3.0, "cam"),
        CreateStream(4.0),
        Publish(5.0, 1, "cam", "live"),
    ]
    meta = events[4]
    assert isinstance(meta, Metadata) and meta.values == METADATA and meta.stream_id == 1
    assert meta.payload == amf0.encode("onMetaData", amf0.EcmaArray(METADATA))
    media = [e for e in events if isinstance(e, (VideoData, AudioData))]
    expected = [(VideoData if t == VIDEO else AudioData)(1, ts, payload) for t, ts, payload in frames()]
    assert media == expected
    assert events[-2:] == [FCUnpublish(6.0, "cam"), DeleteStream(7.0, 1)]
    assert server.receive_data(b"") == [ConnectionClosed()]
    assert server.receive_data(b"") == []
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"more")


def test_client_sees_result_and_status():
    client, server, _ = connected_pair()
    client.create_stream()  # handshake done: returned bytes, not queued
    events = client.receive_data(
        server.create_stream_result(4.0, 1)
        + server.on_status(1, level="status", code="NetStream.Publish.Start", description="go")
    )
    assert events == [
        Result(4.0, [None, 1.0]),
        Status(1, {"level": "status", "code": "NetStream.Publish.Start", "description": "go"}),
    ]


def test_connect_result_contents():
    client, server = ClientConnection(), ServerConnection()
    server.receive_data(client.connect("app", "rtmp://h/app"))
    client.receive_data(server.data_to_send())
    (connect,) = server.receive_data(client.data_to_send())
    (result,) = client.receive_data(server.accept_connect(connect.transaction_id, chunk_size=100))
    props, info = result.values
    assert props == {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}
    assert info["code"] == "NetConnection.Connect.Success" and info["objectEncoding"] == 0.0


def test_reject_connect():
    client, server = ClientConnection(), ServerConnection()
    server.receive_data(client.connect("app", "rtmp://h/app"))
    client.receive_data(server.data_to_send())
    (connect,) = server.receive_data(client.data_to_send())
    (error,) = client.receive_data(server.reject_connect(connect.transaction_id, "no"))
    assert isinstance(error, Error) and error.values[1]["code"] == "NetConnection.Connect.Rejected"


def test_play_session():
    client, server, _ = connected_pair()
    client.create_stream()
    events = server.receive_data(client.play(1, "cam"))
    assert events == [Play(3.0, 1, "cam", -2.0)]
    assert server.buffer_lengths == {1: 3000}
    out = server.user_control(STREAM_BEGIN, 1)
    out += server.on_status(1, level="status", code="NetStream.Play.Start", description="")
    out += server.sample_access(1)
    out += server.send_message(CSID_VIDEO, VIDEO, 1, 0, AVC_HEADER)
    out += server.send_message(CSID_AUDIO, AUDIO, 1, 0, AAC_HEADER)
    events = client.receive_data(out)
    assert events[0] == UserControl(STREAM_BEGIN, 1)
    assert isinstance(events[1], Status) and events[1].info["code"] == "NetStream.Play.Start"
    assert isinstance(events[2], DataMessage) and events[2].name == "|RtmpSampleAccess"
    assert events[2].values == [True, True]
    assert events[3:] == [VideoData(1, 0, AVC_HEADER), AudioData(1, 0, AAC_HEADER)]


def test_metadata_without_set_data_frame_and_other_data():
    client, server, _ = connected_pair()
    bare = amf0.encode("onMetaData", {"width": 640.0})
    (meta,) = server.receive_data(client.send_message(5, 18, 1, 0, bare))
    assert meta.values == {"width": 640.0}
    (data,) = server.receive_data(client.send_message(5, 18, 1, 7, amf0.encode("onTextData", {"text": "hi"})))
    assert data == DataMessage(1, 7, "onTextData", [{"text": "hi"}], amf0.encode("onTextData", {"text": "hi"}))


def test_amf3_command_and_other_commands():
    client, server, _ = connected_pair()
    events = server.receive_data(
        client.send_message(3, COMMAND_AMF3, 0, 0, b"\x00" + amf0.encode("createStream", 9.0, None))
        + client.command("getStreamLength", None, "cam")
        + client.command("closeStream", None, stream_id=1)
    )
    assert events == [
        CreateStream(9.0),
        OtherCommand("getStreamLength", 2.0, 0, [None, "cam"]),
        CloseStream(1),
    ]


def test_aggregate_message_split_and_rebased():
    def sub(tag_type, ts, body):
        header = bytes([tag_type]) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
        return header + bytes([ts >> 24]) + b"\x00\x00\x00" + body + (11 + len(body)).to_bytes(4, "big")

    payload = sub(9, 1000, b"\x17\x01vid") + sub(8, 1010, b"\xaf\x01aud") + sub(18, 1020, amf0.encode("onMetaData", {}))
    client, server, _ = connected_pair()
    events = server.receive_data(client.send_message(4, 22, 1, 5000, payload))
    assert events[:2] == [VideoData(1, 5000, b"\x17\x01vid"), AudioData(1, 5010, b"\xaf\x01aud")]
    assert isinstance(events[2], Metadata) and events[2].timestamp == 5020


def test_ping_request_is_answered():
    client, server, _ = connected_pair()
    out_parser = ChunkParser()
    out_parser.feed(server.data_to_send())
    server.receive_data(client.send_message(2, USER_CONTROL, 0, 0, struct.pack(">HI", 6, 1234)))
    (pong,) = [m for m in out_parser.feed(server.data_to_send()) if m.msg_type == USER_CONTROL]
    assert pong.payload == struct.pack(">HI", PING_RESPONSE, 1234)


def test_server_acknowledges_window():
    client, server, _ = connected_pair()
    server.receive_data(client.send_message(2, 5, 0, 0, struct.pack(">I", 5000)))
    assert server.data_to_send() == b""
    server.receive_data(client.send_message(CSID_VIDEO, VIDEO, 1, 0, bytes(6000)))
    (ack,) = [m for m in ChunkParser().feed(server.data_to_send()) if m.msg_type == ACK]
    assert struct.unpack(">I", ack.payload)[0] == server.bytes_received


def test_client_acknowledges_window():
    client, server, _ = connected_pair(window_ack_size=10_000)
    client.data_to_send()
    client.receive_data(server.send_message(CSID_VIDEO, VIDEO, 1, 0, bytes(12_000)))
    (ack,) = [m for m in ChunkParser().feed(client.data_to_send()) if m.msg_type == ACK]
    assert struct.unpack(">I", ack.payload)[0] == client.bytes_received


def test_client_queues_messages_until_handshake_done():
    client, server = ClientConnection(digest_handshake=True), ServerConnection()
    c0c1 = client.connect("live", "rtmp://h/live")
    assert len(c0c1) == 1537
    assert client.create_stream() == b""
    server.receive_data(c0c1)
    client.receive_data(server.data_to_send())
    events = server.receive_data(client.data_to_send())
    assert [type(e) for e in events] == [Connect, CreateStream]
    with pytest.raises(LocalProtocolError):
        ClientConnection().receive_data(b"\x03")


def test_error_state_after_garbage():
    client, server, _ = connected_pair()
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"\xc9" + bytes(100))  # fmt 3 on an unknown chunk stream
    with pytest.raises(RemoteProtocolError):
        server.receive_data(client.create_stream())


def test_invalid_chunk_size_from_peer():
    client, server, _ = connected_pair()
    with pytest.raises(RemoteProtocolError):
        server.receive_data(client.send_message(2, 1, 0, 0, struct.pack(">I", 1 << 30)))


# One recorded client session, replayed into fresh servers cut at arbitrary points.
def _recorded_session():
    client, server = ClientConnection(), ServerConnection()
    wire = client.connect("live", "rtmp://127.0.0.1/live")
    server.receive_data(wire)
    client.receive_data(server.data_to_send())
    rest = client.data_to_send()
    wire += rest
    server.receive_data(rest)
    sent, events = publish_session(client, server)
    return wire + sent, events


SESSION, SESSION_EVENTS = _recorded_session()


@given(st.lists(st.integers(0, len(SESSION)), max_size=30))
@settings(max_examples=100, deadline=None)
def test_session_split_anywhere(cuts):
    server = ServerConnection()
    events, last = [], 0
    for p in [*sorted(cuts), len(SESSION)]:
        if p > last:
            events += server.receive_data(SESSION[last:p])
        last = p
    assert events[1:] == SESSION_EVENTS
    assert isinstance(events[0], Connect)
