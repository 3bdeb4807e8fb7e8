"""Every place the SFU reaches into aiortc/aioice internals, pinned to the versions below.

aiortc decodes everything it receives; the SFU forwards encoded frames instead. The hooks:

- `receiver_forward`: swap the receiver's jitter buffer for `ForwardJitterBuffer`, which hands each
  reassembled frame to the SFU (and never to the decoder thread, which then idles) as soon as its
  marker packet completes it, instead of one frame later as aiortc's buffer does.
- `receiver_request_keyframe`: send a PLI upstream to the publisher (`RTCRtpReceiver._send_rtcp_pli`).
- `sender_route_keyframe`: a subscriber's PLI/FIR ends in `RTCRtpSender._send_keyframe`, which only
  flags an encoder that does not exist here; route it to the publisher instead.
- `sender_forward`: replace the subscriber sender's RTP loop (`_run_rtp`, one asyncio task that awaits
  `track.recv()` and sends packet by packet) with an `RtpOutput` the forwarder calls synchronously:
  the frame is packetized once for all subscribers (`Packetizer`), each subscriber only builds its
  headers, SRTP-protects and sends the frame in one `sendmsg` (sfu/udpsend.py). `_retransmit` (NACK)
  reads the output's history; RTCP sender reports read the counters the output keeps up to date.
- `receiver_on_sender_report`: the publisher's RTCP sender reports (NTP time <-> RTP time of each
  track), for one clock across its audio and video (`RTCRtpReceiver._handle_rtcp_packet`).
- `codec_capabilities`: the capability (and RTX) to give `RTCRtpTransceiver.setCodecPreferences`;
  `negotiated_codec` reads what a transceiver negotiated (`RTCRtpTransceiver._codecs`);
  `common_codecs` is aiortc's own match of an offer against its codecs (`find_common_codecs`).
- `h264_profiles_register`: aiortc knows H.264 only as Constrained Baseline / Baseline; add the
  profiles an RTMP stream's SPS may say (Main, High, High 4:4:4) to `aiortc.codecs.CODECS`, so an
  answer can carry the stream's real `profile-level-id`. Forwarding never decodes, so aiortc's
  own decoder never sees them.
- `ice_restrict`: aioice gathers host candidates from every interface but loopback; use only the
  configured addresses, shorten the consent-freshness timeout, and bind in a port range.

Other versions fail loudly at import time (`check_versions`) and in `tests/sfu/test_units.py`.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from importlib.metadata import version

import aioice.ice
import av
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.clock import current_ntp_time
from aiortc.codecs import CODECS, get_capabilities, get_encoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcpeerconnection import find_common_codecs
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTP_HISTORY_SIZE, random_sequence_number
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.rtp import HeaderExtensions, RtcpSrPacket, RtpPacket
from aiortc.utils import random32, uint16_add, uint16_gt

from .udpsend import send_burst

PINNED = {"aiortc": "1.16.0", "aioice": "0.13.0", "av": "18.1.0"}


class HookVersionError(RuntimeError):
    pass


def check_versions() -> None:
    found = {name: version(name) for name in PINNED}
    if found != PINNED:
        raise HookVersionError(
            f"sfu.aiortc_hooks is written for {PINNED}, found {found}: re-read the hook points "
            "(docs: AIORTC_SFU.md) and update sfu/aiortc_hooks.py before changing requirements.txt"
        )


check_versions()

# A frame the jitter buffer could not complete for this long (NACKs failed): skip it, ask for a keyframe.
LOST_FRAME_TIMEOUT = 0.25

FrameSink = Callable[[bytes, int, float, bool], None]  # data, unwrapped RTP timestamp, arrival, after_loss


class ForwardJitterBuffer(JitterBuffer):
    """Reassembles frames and hands them to `sink` at once; `add` always returns no frame.

    Video: a frame goes out when the packets from its first one to its marker are all in, from a place a frame is
    known to start: after a marker or a change of timestamp, or at a packet `frame_starts` says starts one. A
    packet missing behind a newer one (a hole) for LOST_FRAME_TIMEOUT gives its frame up: dropped, with every
    later packet of its timestamp; the next frame out is flagged after_loss (the hub then waits for a keyframe)
    and a PLI is asked for. Audio (Opus: one packet, one frame): every packet is a frame; late ones are dropped.
    """

    def __init__(self, sink: FrameSink, is_video: bool, clock: Callable[[], float] = time.monotonic,
                 codec: str | None = None) -> None:
        super().__init__(capacity=512 if is_video else 16, is_video=is_video)
        self.sink = sink
        self.ssrc: int | None = None
        self._clock = clock
        # Video starts at the first packet that starts a frame (`codec` known), else after the
        # first marker: we may join mid-frame, and a publisher's very first frame is its keyframe.
        self._synced = not is_video
        self._codec = (codec or "").lower()
        self._after_loss = False
        self._newest = 0  # sequence number of the newest packet in the window
        self._holes: deque[tuple[int, float]] = deque()  # (sequence number that came past missing ones, when)
        self._scanned = 0  # packets from the origin on known to be the start of one unfinished frame
        self._abandoned: int | None = None  # RTP timestamp of the frame last given up on
        self._ts_last: int | None = None
        self._ts_base = 0

    def _unwrap(self, timestamp: int) -> int:
        if self._ts_last is not None and timestamp < self._ts_last and self._ts_last - timestamp > 1 << 31:
            self._ts_base += 1 << 32
        elif self._ts_last is not None and timestamp > self._ts_last and timestamp - self._ts_last > 1 << 31:
            return self._ts_base - (1 << 32) + timestamp  # a late packet from before a wrap
        self._ts_last = timestamp
        return self._ts_base + timestamp

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        self.ssrc = packet.ssrc
        now = self._clock()
        if not self._is_video:
            if self._origin is not None and uint16_gt(self._origin, packet.sequence_number):
                return False, None
            self._origin = uint16_add(packet.sequence_number, 1)
            self.sink(packet._data, self._unwrap(packet.timestamp), now, False)  # type: ignore[attr-defined]
            return False, None
        if not self._synced and not self._sync(packet):
            return False, None
        pli = packet.timestamp != self._abandoned and self._store(packet, now)  # not the rest of a frame given up on
        while (hole := self._drain(now)) is not None and now - self._hole_since(hole, now) > LOST_FRAME_TIMEOUT:
            self._give_up()
            pli = True
        return pli, None

    def _store(self, packet: RtpPacket, now: float) -> bool:
        """aiortc's add: True (ask for a keyframe) if it restarted the window or made room for a packet far ahead."""
        seq = packet.sequence_number
        behind = uint16_gt(self._origin, seq)
        pli, _ = super().add(packet)
        if pli or uint16_gt(seq, self._newest):
            if pli and behind:  # restarted at this packet
                self._holes.clear()
            elif seq != uint16_add(self._newest, 1):
                self._holes.append((seq, now))
            self._newest = seq
        elif uint16_add(seq, -self._origin) < self._scanned:
            self._scanned = 0  # a duplicate replaced a packet already looked at
        if pli:  # the origin may now be inside a frame
            self._after_loss = True
            self._resync()
        return pli

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        return None  # frames leave through _drain, called by add

    def _sync(self, packet: RtpPacket) -> bool:
        """Take the stream up where a frame starts: at this packet (True), or after it if it is a marker."""
        seq = packet.sequence_number
        if packet.timestamp != self._abandoned and frame_starts(self._codec, packet.payload):
            self._origin = seq
        elif packet.marker:
            self._origin = uint16_add(seq, 1)
        else:
            return False
        self._synced = True
        self._newest = uint16_add(self._origin, -1)
        self._holes.clear()
        self._scanned = 0
        return self._origin == seq

    def _drain(self, now: float) -> int | None:
        """Hand every complete frame at the origin to the sink; then the sequence number of the packet holding up
        the next frame if a newer one is in (a hole), else None."""
        while self._synced:
            frame = self._pop_frame()
            if frame is None:
                missing = uint16_add(self._origin, self._scanned)
                if self._scanned < self._capacity and uint16_gt(self._newest, missing):
                    return missing
                if self._holes:
                    self._holes.clear()  # all filled
                return None
            self.sink(frame.data, self._unwrap(frame.timestamp), now, self._after_loss)
            self._after_loss = False
        return None

    def _pop_frame(self) -> JitterFrame | None:
        """The frame at the origin once its marker, or a packet of the next timestamp, is in; else None, with
        `_scanned` at the first packet missing. Each packet is looked at once."""
        packets, capacity, origin = self._packets, self._capacity, self._origin
        first = packets[origin % capacity]
        count = self._scanned
        while count < capacity:
            packet = packets[(origin + count) % capacity]
            if packet is None:
                break
            if packet.timestamp != first.timestamp:  # the frame ended without a marker
                return self._take(count)
            count += 1
            if packet.marker:
                return self._take(count)
        self._scanned = count
        return None

    def _take(self, count: int) -> JitterFrame:
        packets, capacity, origin = self._packets, self._capacity, self._origin
        data = b"".join([packets[(origin + i) % capacity]._data for i in range(count)])  # type: ignore[union-attr]
        timestamp = packets[origin % capacity].timestamp  # type: ignore[union-attr]
        self.remove(count)
        self._scanned = 0
        return JitterFrame(data, timestamp)

    def _hole_since(self, missing: int, now: float) -> float:
        """When the packet `missing` was found missing: when the first packet past it came in."""
        holes = self._holes
        while holes and not 0 < uint16_add(holes[0][0], -missing) < self._capacity:
            holes.popleft()  # holes since filled, or from before the origin
        if not holes:
            holes.append((self._newest, now))
        return holes[0][1]

    def _give_up(self) -> None:
        """Drop the frame a hole holds up, and from now on every packet of its timestamp."""
        for count in range(self._capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is not None:
                # Past the hole, a packet that starts a frame: the hole was a whole frame, not part of this one.
                if count == 0 or not frame_starts(self._codec, packet.payload):
                    self._abandoned = packet.timestamp
                break
        self._after_loss = True
        self._resync()

    def _resync(self) -> None:
        """Move the origin to the first place in the window a frame is known to start, dropping what is before;
        none: empty the window and take the stream up again at the next one (`_sync`)."""
        packets, capacity, origin = self._packets, self._capacity, self._origin
        self._scanned = 0
        previous = None
        for count in range(capacity):
            packet = packets[(origin + count) % capacity]
            if packet is None or packet.timestamp != self._abandoned:
                if previous is not None and (previous.marker or (
                        packet is not None and packet.timestamp != previous.timestamp)):
                    self.remove(count)
                    return
                if packet is not None and frame_starts(self._codec, packet.payload):
                    self.remove(count)
                    return
            previous = packet
        self.remove(capacity)
        self._synced = False


def frame_starts(codec: str, payload: bytes) -> bool:
    """Does this RTP payload certainly start a frame? VP8: the S bit of partition 0 (RFC 7741). H.264 has no such
    bit (RFC 6184), and a slice or FU-A start may be the second of its picture: only an access unit delimiter or
    an SPS, which never come after a slice of their access unit, as its first NAL unit (single NAL unit, STAP-A,
    first FU-A fragment). WebRTC encoders begin each keyframe with SPS and PPS. False when unknown."""
    if len(payload) < 2:
        return False
    if codec == "vp8":
        return bool(payload[0] & 0x10) and payload[0] & 0x07 == 0
    if codec == "h264":
        nal_type = payload[0] & 0x1F
        if nal_type == 24:  # STAP-A: a 16-bit size, then the first NAL unit
            nal_type = payload[3] & 0x1F if len(payload) > 3 else 0
        elif nal_type == 28:  # FU-A
            nal_type = payload[1] & 0x1F if payload[1] & 0x80 else 0
        return nal_type in (7, 9)
    return False


def receiver_forward(receiver: RTCRtpReceiver, sink: FrameSink, codec: str | None = None) -> ForwardJitterBuffer:
    """Make `receiver` hand encoded frames to `sink` instead of its decoder. Call before media flows.
    `codec` ("VP8", "H264") lets video start at the first frame instead of the second."""
    kind = receiver._RTCRtpReceiver__kind  # type: ignore[attr-defined]
    buffer = ForwardJitterBuffer(sink, is_video=kind == "video", codec=codec)
    receiver._RTCRtpReceiver__jitter_buffer = buffer  # type: ignore[attr-defined]
    return buffer


async def receiver_request_keyframe(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    await receiver._send_rtcp_pli(media_ssrc)


def sender_route_keyframe(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """A PLI or FIR from the subscriber calls `callback` (the sender itself has no encoder)."""
    sender._send_keyframe = callback  # type: ignore[method-assign]


def receiver_on_sender_report(receiver: RTCRtpReceiver, callback: Callable[[int, int], None]) -> None:
    """Call `callback(ntp_timestamp, rtp_timestamp)` (64-bit NTP, 32-bit RTP) for each RTCP SR."""
    original = receiver._handle_rtcp_packet

    async def handle(packet) -> None:
        if isinstance(packet, RtcpSrPacket):
            callback(packet.sender_info.ntp_timestamp, packet.sender_info.rtp_timestamp)
        await original(packet)

    receiver._handle_rtcp_packet = handle  # type: ignore[method-assign]


# --- codecs ------------------------------------------------------------------------------------

# profile-level-id of the H.264 profiles added to aiortc's own two (42001f, 42e01f).
EXTRA_H264_PROFILES = ("4d001f", "64001f", "f4001f")  # Main, High, High 4:4:4 Predictive


def h264_profiles_register() -> None:
    """Add EXTRA_H264_PROFILES (each with RTX) to aiortc's codec table, once per process."""
    video = CODECS["video"]
    known = {c.parameters.get("profile-level-id") for c in video if c.mimeType == "video/H264"}
    used = {c.payloadType for c in video} | {c.payloadType for c in CODECS["audio"]}
    free = iter(pt for pt in range(103, 128) if pt not in used)
    for profile_level_id in EXTRA_H264_PROFILES:
        if profile_level_id in known:
            continue
        pt, rtx = next(free), next(free)
        video.append(RTCRtpCodecParameters(
            mimeType="video/H264", clockRate=90000, payloadType=pt,
            rtcpFeedback=[RTCRtcpFeedback(type="nack"), RTCRtcpFeedback(type="nack", parameter="pli"),
                          RTCRtcpFeedback(type="goog-remb")],
            parameters={"level-asymmetry-allowed": "1", "packetization-mode": "1",
                        "profile-level-id": profile_level_id}))
        video.append(RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=rtx,
                                           parameters={"apt": pt}))


def common_codecs(kind: str, remote: list[RTCRtpCodecParameters]) -> list[RTCRtpCodecParameters]:
    """The offer's codecs aiortc can take, in the offer's order (RTX excluded)."""
    return [c for c in find_common_codecs(CODECS[kind], remote) if not c.mimeType.lower().endswith("/rtx")]


def negotiated_codec(transceiver: RTCRtpTransceiver) -> RTCRtpCodecParameters | None:
    """The codec a transceiver negotiated (the first of its common codecs), None before."""
    codecs = transceiver._codecs
    return codecs[0] if codecs else None


def codec_capabilities(codec: RTCRtpCodecParameters) -> list[RTCRtpCodecCapability]:
    """The capability matching a negotiated codec, plus RTX for video: for setCodecPreferences."""
    found = []
    for cap in get_capabilities(codec.mimeType.split("/")[0]).codecs:
        if cap.mimeType.lower() == codec.mimeType.lower() and cap.parameters == codec.parameters:
            found.append(cap)
            break
    if not found:
        raise ValueError(f"{codec.mimeType} {codec.parameters} is not an aiortc capability")
    found += [cap for cap in get_capabilities(codec.mimeType.split("/")[0]).codecs if cap.mimeType.endswith("/rtx")]
    return found


def make_packet(data: bytes, pts: int, time_base) -> av.Packet:
    """The encoded frame as `RTCRtpSender._next_encoded_frame` wants it: it then only packetizes."""
    packet = av.Packet(data)
    packet.pts = pts
    packet.time_base = time_base
    return packet


# --- fan-out: packetize once, send per subscriber ----------------------------------------------

class Packetizer:
    """One per published track: the payloads of each frame, shared by every subscriber's output."""

    def __init__(self, codec: RTCRtpCodecParameters) -> None:
        self._encoder = get_encoder(codec)
        self._time_base = Fraction(1, codec.clockRate)

    def pack(self, data: bytes, pts: int) -> tuple[list[bytes], int]:
        return self._encoder.pack(make_packet(data, pts, self._time_base))


def rtx_wrap(packet: bytes, header_length: int, payload_type: int, sequence_number: int, ssrc: int) -> bytes:
    """`aiortc.rtp.wrap_rtx` on packet bytes: same header and extensions, RTX type, sequence number
    and SSRC, the original sequence number before the payload (RFC 4588)."""
    return (packet[:1] + bytes([(packet[1] & 0x80) | payload_type]) + struct.pack("!H", sequence_number)
            + packet[4:8] + struct.pack("!L", ssrc) + packet[12:header_length] + packet[2:4]
            + packet[header_length:])


class RtpOutput:
    """One subscriber's sender, minus its RTP task: `send` puts a packetized frame on the wire now.

    What `RTCRtpSender._run_rtp` does per packet, done once per frame where it can be (NTP time,
    header extensions), with the sender's own SSRC, sequence numbers, RTX history and SRTP context.
    """

    def __init__(self, sender: RTCRtpSender, codec: RTCRtpCodecParameters) -> None:
        self._sender = sender
        self._dtls = sender.transport
        self._payload_type = codec.payloadType
        self._ssrc = sender._ssrc
        self._sequence = random_sequence_number()
        self._timestamp_origin = random32()
        self._history: dict[int, tuple[bytes, int]] = {}  # seq % size -> (plain RTP packet, header length)
        self._extensions_map = sender._RTCRtpSender__rtp_header_extensions_map  # type: ignore[attr-defined]
        self._mid = sender._RTCRtpSender__mid  # type: ignore[attr-defined]
        self._pair = None
        self._socket: socket.socket | None = None
        self.syscalls = 0

    def _route(self):
        """The nominated ICE pair's socket (a duplicate we own) and remote address, or None."""
        connection = self._dtls.transport._connection
        pair = connection._nominated.get(1)
        if pair is None or pair.protocol.transport is None:
            return None
        if pair is not self._pair:
            self.close()
            self._pair = pair
            sock = pair.protocol.transport.get_extra_info("socket")
            try:  # no socket of its own (e.g. a TURN relay): frames go through asyncio's sendto
                if sock is not None:
                    self._socket = socket.socket(fileno=os.dup(sock.fileno()))
                    self._socket.setblocking(False)
            except OSError:
                self._socket = None
        return pair

    def send(self, payloads: list[bytes], timestamp: int) -> bool:
        """Send one frame; False if it could not go out whole (not connected, socket buffer full)."""
        dtls = self._dtls
        if dtls._state != DtlsState.CONNECTED:
            return False
        pair = self._route()
        if pair is None:
            return False
        ntp = current_ntp_time()
        extensions = HeaderExtensions()
        extensions.abs_send_time = (ntp >> 14) & 0x00FFFFFF
        extensions.mid = self._mid
        profile, value = self._extensions_map.set(extensions)
        if value:
            first, tail = 0x90, struct.pack("!HH", profile, len(value) >> 2) + value
        else:
            first, tail = 0x80, b""
        header_length = 12 + len(tail)
        timestamp = (self._timestamp_origin + timestamp) & 0xFFFFFFFF
        protect = dtls._tx_srtp.protect
        history = self._history
        pack, ssrc, payload_type = struct.pack, self._ssrc, self._payload_type
        sequence = self._sequence
        last = len(payloads) - 1
        datagrams = []
        octets = 0
        for index, payload in enumerate(payloads):
            packet = pack("!BBHLL", first, payload_type | (0x80 if index == last else 0), sequence, timestamp,
                          ssrc) + tail + payload
            history[sequence % RTP_HISTORY_SIZE] = (packet, header_length)
            datagrams.append(protect(packet))
            octets += len(payload)
            sequence = (sequence + 1) & 0xFFFF
        self._sequence = sequence
        transport = pair.protocol.transport
        try:
            if self._socket is None or transport.get_write_buffer_size():  # keep asyncio's queue in order
                for datagram in datagrams:
                    transport.sendto(datagram, pair.remote_addr)
            else:
                self.syscalls += send_burst(self._socket, datagrams, pair.remote_addr)
        except BlockingIOError:
            return False
        except OSError:
            return False
        sender = self._sender
        sender._RTCRtpSender__ntp_timestamp = ntp
        sender._RTCRtpSender__rtp_timestamp = timestamp
        sender._RTCRtpSender__octet_count += octets
        sender._RTCRtpSender__packet_count += len(datagrams)
        return True

    async def retransmit(self, sequence_number: int) -> None:
        """A NACKed packet again, as RTX when negotiated (`RTCRtpSender._retransmit`, from our history)."""
        entry = self._history.get(sequence_number % RTP_HISTORY_SIZE)
        if entry is None or struct.unpack_from("!H", entry[0], 2)[0] != sequence_number:
            return
        packet, header_length = entry
        sender = self._sender
        rtx_type = sender._RTCRtpSender__rtx_payload_type
        if rtx_type is not None:
            rtx_sequence = sender._RTCRtpSender__rtx_sequence_number
            sender._RTCRtpSender__rtx_sequence_number = uint16_add(rtx_sequence, 1)
            packet = rtx_wrap(packet, header_length, rtx_type, rtx_sequence, sender._rtx_ssrc)
        await self._dtls._send_rtp(packet)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket, self._pair = None, None


def sender_forward(sender: RTCRtpSender, attach: Callable[[RtpOutput | None], None]) -> None:
    """Run `sender` as an `RtpOutput`: `attach(output)` once it starts (DTLS is up), `attach(None)`
    when it stops. Its track is then never read. Call before negotiation starts the sender."""
    state: dict[str, RtpOutput | None] = {"output": None}

    async def run_rtp(codec: RTCRtpCodecParameters) -> None:
        output = state["output"] = RtpOutput(sender, codec)
        sender._RTCRtpSender__rtp_started.set()  # type: ignore[attr-defined]
        attach(output)
        try:
            await asyncio.get_running_loop().create_future()  # until RTCRtpSender.stop cancels us
        except asyncio.CancelledError:
            pass
        finally:
            attach(None)
            output.close()
            state["output"] = None
            sender._RTCRtpSender__rtp_exited.set()  # type: ignore[attr-defined]

    async def retransmit(sequence_number: int) -> None:
        output = state["output"]
        if output is not None:
            await output.retransmit(sequence_number)

    sender._run_rtp = run_rtp  # type: ignore[method-assign]
    sender._retransmit = retransmit  # type: ignore[method-assign]


# --- ICE ---------------------------------------------------------------------------------------

_ice = {"addresses": None, "ports": None}
_original_get_host_addresses = aioice.ice.get_host_addresses
_original_create_endpoint = None


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    addresses = _ice["addresses"]
    if addresses is None:
        return _original_get_host_addresses(use_ipv4, use_ipv6)
    return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


def _bind_in_range(host: str, ports: tuple[int, int]) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low, high = ports
    candidates = list(range(low, high + 1))
    random.shuffle(candidates)
    for port in candidates[:64]:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            continue
        sock.setblocking(False)
        return sock
    raise OSError(f"no free UDP port in {low}-{high} on {host}")


class _RangeLoop:
    """Seen only by aioice.ice: binds its host sockets in the configured port range."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def __getattr__(self, name: str):
        return getattr(self._loop, name)

    async def create_datagram_endpoint(self, factory, local_addr=None, **kwargs):
        ports = _ice["ports"]
        if ports and local_addr and local_addr[1] == 0 and not kwargs:
            return await self._loop.create_datagram_endpoint(factory, sock=_bind_in_range(local_addr[0], ports))
        return await self._loop.create_datagram_endpoint(factory, local_addr=local_addr, **kwargs)


class _AsyncioForAioice:
    def __getattr__(self, name: str):
        return getattr(asyncio, name)

    @staticmethod
    def get_running_loop() -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        return _RangeLoop(loop) if _ice["ports"] else loop  # type: ignore[return-value]


def ice_restrict(addresses: list[str] | None, *, consent_interval: float | None = None,
                 consent_failures: int | None = None, ports: tuple[int, int] | None = None) -> None:
    """Process-wide: ICE host candidates only on `addresses` (None: aioice's own choice),
    consent checks every `consent_interval` s (a vanished peer is closed after about
    interval * failures), host sockets bound in `ports` (inclusive) when given."""
    _ice["addresses"] = list(addresses) if addresses is not None else None
    _ice["ports"] = ports
    aioice.ice.get_host_addresses = _host_addresses
    if ports:
        aioice.ice.asyncio = _AsyncioForAioice()  # type: ignore[assignment]
    else:
        aioice.ice.asyncio = asyncio
    if consent_interval is not None:
        aioice.ice.CONSENT_INTERVAL = consent_interval
    if consent_failures is not None:
        aioice.ice.CONSENT_FAILURES = consent_failures


@contextlib.contextmanager
def ice_loopback_only():
    """For tests and the bench: every ICE agent in this process uses 127.0.0.1 only."""
    saved = dict(_ice), aioice.ice.CONSENT_INTERVAL, aioice.ice.CONSENT_FAILURES, aioice.ice.asyncio
    ice_restrict(["127.0.0.1"])
    try:
        yield
    finally:
        _ice.update(saved[0])
        aioice.ice.CONSENT_INTERVAL, aioice.ice.CONSENT_FAILURES, aioice.ice.asyncio = saved[1:]


def rtp_bytes_sent(pc) -> int:
    """RTP payload bytes a peer connection has sent (its senders' RTCP sender-report counts)."""
    return sum(getattr(sender, "_RTCRtpSender__octet_count", 0) for sender in pc.getSenders())
