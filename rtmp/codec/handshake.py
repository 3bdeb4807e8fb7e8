"""RTMP handshake (C0/C1/C2, S0/S1/S2): plain and the Flash-era digest variant.

The digest scheme follows nginx-rtmp's ngx_rtmp_handshake.c: C1 carries an
HMAC-SHA256 digest (keyed with the Flash Player key) at an offset derived from
four bytes of C1 ("scheme 1": bytes 772..775, "scheme 0": bytes 8..11). The
server answers with its own digest in S1 and signs S2 with a key derived from
the client's digest, which is what Flash and ffmpeg's player verify.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from collections.abc import Callable

from .errors import LocalProtocolError, RemoteProtocolError

RTMP_VERSION = 3
PACKET_SIZE = 1536
DIGEST_SIZE = 32

_KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL  # 68 bytes
FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL  # 62 bytes
FMS_PARTIAL_KEY = FMS_KEY[:36]
FP_PARTIAL_KEY = FP_KEY[:30]

SERVER_VERSION = b"\x0d\x0e\x0a\x0d"  # nginx-rtmp's; non-zero announces digest
CLIENT_VERSION = b"\x0c\x00\x0d\x0e"  # as Flash Player / nginx-rtmp relay send

SCHEME0_BASE = 8
SCHEME1_BASE = 772


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def digest_offset(packet: bytes, base: int) -> int:
    """Offset of the digest in a 1536-byte C1/S1 for the scheme at `base`."""
    return sum(packet[base : base + 4]) % 728 + base + 4


def make_digest(packet: bytes, offset: int, key: bytes) -> bytes:
    """HMAC over the packet with the 32 digest bytes at `offset` left out."""
    return _hmac(key, packet[:offset] + packet[offset + DIGEST_SIZE :])


def find_digest(packet: bytes, key: bytes) -> int | None:
    """Return the digest offset if a valid digest is found (scheme 1, then 0)."""
    for base in (SCHEME1_BASE, SCHEME0_BASE):
        offset = digest_offset(packet, base)
        expected = make_digest(packet, offset, key)
        if hmac.compare_digest(expected, packet[offset : offset + DIGEST_SIZE]):
            return offset
    return None


def imprint_digest(packet: bytearray, key: bytes, base: int = SCHEME0_BASE) -> bytes:
    """Write a digest into packet (in place) and return it."""
    offset = digest_offset(packet, base)
    digest = make_digest(bytes(packet), offset, key)
    packet[offset : offset + DIGEST_SIZE] = digest
    return digest


def sign_response(packet: bytearray, peer_digest: bytes, full_key: bytes) -> None:
    """Sign S2/C2 in place: the last 32 bytes are an HMAC keyed from the peer digest."""
    key = _hmac(full_key, peer_digest)
    packet[-DIGEST_SIZE:] = _hmac(key, bytes(packet[:-DIGEST_SIZE]))


def response_signature_ok(packet: bytes, own_digest: bytes, full_key: bytes) -> bool:
    key = _hmac(full_key, own_digest)
    return hmac.compare_digest(_hmac(key, packet[:-DIGEST_SIZE]), packet[-DIGEST_SIZE:])


def _epoch_ms() -> int:
    return int(time.monotonic() * 1000) & 0xFFFFFFFF


def _check_version(version: int) -> None:
    if version != RTMP_VERSION:
        # 6 is RTMPE (encrypted); 0x47 is usually an HTTP "GET".
        raise RemoteProtocolError(f"unsupported RTMP version {version}")


class _Handshake:
    def __init__(self) -> None:
        self._inbuf = bytearray()
        self._out = bytearray()
        self.done = False
        self.leftover = b""

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _buffer(self, data: bytes) -> None:
        if self.done:
            raise LocalProtocolError("handshake already finished; data belongs to the chunk stream")
        self._inbuf += data

    def _finish(self, consumed: int) -> None:
        self.leftover = bytes(self._inbuf[consumed:])
        self._inbuf = bytearray()
        self.done = True


class ServerHandshake(_Handshake):
    """Server side: reads C0+C1, answers S0+S1+S2, then waits for C2."""

    def __init__(self, *, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        super().__init__()
        self._random = random_bytes
        self._replied = False
        self.digest = False  # True when the client used the digest handshake

    def receive_data(self, data: bytes) -> None:
        self._buffer(data)
        if self._inbuf:
            _check_version(self._inbuf[0])
        if not self._replied and len(self._inbuf) >= 1 + PACKET_SIZE:
            self._reply(bytes(self._inbuf[1 : 1 + PACKET_SIZE]))
            self._replied = True
        if self._replied and len(self._inbuf) >= 1 + 2 * PACKET_SIZE:
            self._finish(1 + 2 * PACKET_SIZE)  # C2 is not verified: nginx doesn't either

    def _reply(self, c1: bytes) -> None:
        client_digest = None
        if c1[4:8] != b"\x00\x00\x00\x00":  # zero version field means plain handshake
            offset = find_digest(c1, FP_PARTIAL_KEY)
            if offset is not None:
                client_digest = c1[offset : offset + DIGEST_SIZE]
        s1 = bytearray(struct.pack(">I", _epoch_ms()))
        if client_digest is None:
            s1 += b"\x00\x00\x00\x00" + self._random(PACKET_SIZE - 8)
            s2 = c1  # plain handshake: S2 echoes C1
        else:
            self.digest = True
            s1 += SERVER_VERSION + self._random(PACKET_SIZE - 8)
            imprint_digest(s1, FMS_PARTIAL_KEY)
            s2b = bytearray(self._random(PACKET_SIZE))
            sign_response(s2b, client_digest, FMS_KEY)
            s2 = bytes(s2b)
        self._out += bytes((RTMP_VERSION,)) + s1 + s2


class ClientHandshake(_Handshake):
    """Client side: C0+C1 are queued at once; C2 follows S1; done after S2.

    With digest=True, C1 carries a Flash Player digest and the server's S1
    digest and S2 signature are verified (a mismatch raises RemoteProtocolError).
    """

    def __init__(self, *, digest: bool = False, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        super().__init__()
        self._random = random_bytes
        self._digest = digest
        self._sent_c2 = False
        self._c1_digest = b""
        self._s1_had_digest = False
        self.verified = False  # True once a digest handshake checked out
        c1 = bytearray(struct.pack(">I", _epoch_ms()))
        if digest:
            c1 += CLIENT_VERSION + random_bytes(PACKET_SIZE - 8)
            self._c1_digest = imprint_digest(c1, FP_PARTIAL_KEY)
        else:
            c1 += b"\x00\x00\x00\x00" + random_bytes(PACKET_SIZE - 8)
        self._out += bytes((RTMP_VERSION,)) + c1

    def receive_data(self, data: bytes) -> None:
        self._buffer(data)
        if self._inbuf:
            _check_version(self._inbuf[0])
        if not self._sent_c2 and len(self._inbuf) >= 1 + PACKET_SIZE:
            self._answer(bytes(self._inbuf[1 : 1 + PACKET_SIZE]))
            self._sent_c2 = True
        if self._sent_c2 and len(self._inbuf) >= 1 + 2 * PACKET_SIZE:
            s2 = bytes(self._inbuf[1 + PACKET_SIZE : 1 + 2 * PACKET_SIZE])
            self._check_s2(s2)
            self._finish(1 + 2 * PACKET_SIZE)

    def _answer(self, s1: bytes) -> None:
        if not self._digest or s1[4:8] == b"\x00\x00\x00\x00":
            self._out += s1  # plain: C2 echoes S1
            return
        offset = find_digest(s1, FMS_PARTIAL_KEY)
        if offset is None:
            raise RemoteProtocolError("server S1 digest is invalid")
        c2 = bytearray(self._random(PACKET_SIZE))
        sign_response(c2, s1[offset : offset + DIGEST_SIZE], FP_KEY)
        self._out += c2
        self._s1_had_digest = True

    def _check_s2(self, s2: bytes) -> None:
        if not self._s1_had_digest:
            return
        if not response_signature_ok(s2, self._c1_digest, FMS_KEY):
            raise RemoteProtocolError("server S2 signature is invalid")
        self.verified = True
