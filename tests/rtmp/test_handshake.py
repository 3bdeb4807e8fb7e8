"""Handshake: plain and digest (Flash/ffmpeg style), checked with an independent HMAC."""

import hashlib
import hmac
import os
import struct

import pytest

from rtmp.codec.errors import RemoteProtocolError
from rtmp.codec.handshake import ClientHandshake, ServerHandshake

TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + TAIL
FP_KEY = b"Genuine Adobe Flash Player 001" + TAIL


def sha(key, data):
    return hmac.new(key, data, hashlib.sha256).digest()


def offset(packet, base):
    return sum(packet[base : base + 4]) % 728 + base + 4


def digest_c1(scheme_base):
    """A Flash-style C1 with its digest at the given scheme (8: scheme 0, 772: scheme 1)."""
    c1 = bytearray(struct.pack(">I", 0) + b"\x0a\x00\x2d\x02" + os.urandom(1528))
    off = offset(c1, scheme_base)
    c1[off : off + 32] = sha(FP_KEY[:30], bytes(c1[:off] + c1[off + 32 :]))
    return bytes(c1), bytes(c1[off : off + 32])


def run_server(c0c1, c2=None):
    server = ServerHandshake()
    server.receive_data(c0c1)
    reply = server.data_to_send()
    assert len(reply) == 1 + 2 * 1536 and reply[0] == 3
    if c2 is not None:
        server.receive_data(c2)
    return server, reply[1:1537], reply[1537:]


def test_plain_handshake_server_echoes_c1():
    c1 = b"\x00" * 8 + os.urandom(1528)
    server, s1, s2 = run_server(b"\x03" + c1)
    assert s2 == c1 and s1[4:8] == b"\x00\x00\x00\x00"
    assert not server.done and not server.digest
    server.receive_data(s1 + b"extra")
    assert server.done and server.leftover == b"extra"


@pytest.mark.parametrize("base", [8, 772])
def test_digest_handshake_server(base):
    c1, client_digest = digest_c1(base)
    server, s1, s2 = run_server(b"\x03" + c1, c2=os.urandom(1536))
    assert server.digest and server.done
    # S1 carries a server digest at scheme 0 keyed with the FMS partial key.
    off = offset(s1, 8)
    assert s1[off : off + 32] == sha(FMS_KEY[:36], s1[:off] + s1[off + 32 :])
    # S2 is signed with a key derived from C1's digest and the full FMS key.
    key = sha(FMS_KEY, client_digest)
    assert s2[-32:] == sha(key, s2[:-32])


def test_nonzero_version_without_valid_digest_falls_back_to_plain():
    c1 = b"\x00\x00\x00\x00\x01\x02\x03\x04" + os.urandom(1528)
    server, s1, s2 = run_server(b"\x03" + c1)
    assert not server.digest and s2 == c1


def test_byte_at_a_time():
    client = ClientHandshake()
    server = ServerHandshake()
    for b in client.data_to_send():
        server.receive_data(bytes([b]))
    reply = server.data_to_send()
    for b in reply:
        client.receive_data(bytes([b]))
    assert client.done and client.leftover == b""
    c2 = client.data_to_send()
    for b in c2:
        server.receive_data(bytes([b]))
    assert server.done


@pytest.mark.parametrize("digest", [False, True])
def test_client_server_pair(digest):
    client = ClientHandshake(digest=digest)
    server = ServerHandshake()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send() + b"chunks")
    assert client.done and client.leftover == b"chunks"
    assert client.verified == digest
    server.receive_data(client.data_to_send())
    assert server.done and server.digest == digest


def test_client_rejects_forged_s2():
    client = ClientHandshake(digest=True)
    server = ServerHandshake()
    server.receive_data(client.data_to_send())
    reply = bytearray(server.data_to_send())
    reply[-1] ^= 0xFF
    with pytest.raises(RemoteProtocolError):
        client.receive_data(bytes(reply))


@pytest.mark.parametrize("first", [b"\x06", b"G", b"\x00"])
def test_bad_version_is_refused_immediately(first):
    with pytest.raises(RemoteProtocolError):
        ServerHandshake().receive_data(first + b"ET / HTTP/1.1\r\n")
