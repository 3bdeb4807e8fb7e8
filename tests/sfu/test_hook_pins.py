"""Pins every aiortc / aioice internal that sfu/aiortc_hooks.py relies on (aiortc 1.16.0, aioice 0.13.0, av 18.1.0).

After an upgrade, run this file first: one test per area, and each failure names the internal that
moved and the hook that depends on it. Each internal is checked on real objects (two aiortc peers
connected over loopback, a real JitterBuffer, a real aioice Connection) and, where the hook depends
on how aiortc calls it, by the call in aiortc's source (whitespace ignored). This docstring is the
upgrade checklist.

Versions
- `aiortc_hooks.PINNED` is what is installed (`check_versions` refuses anything else at import).

Receiver (`aiortc.RTCRtpReceiver`): receiver_forward, receiver_request_keyframe, receiver_on_sender_report
- `_RTCRtpReceiver__kind`: set by `__init__` to the kind; receiver_forward picks the buffer from it.
- `_RTCRtpReceiver__jitter_buffer`: set by `__init__` (video `JitterBuffer(capacity=512, is_video=True)`,
  audio `JitterBuffer(capacity=16, prefetch=4)`); receiver_forward replaces it with a
  ForwardJitterBuffer of the same capacity. (bench/sfu.py reads it too.)
- `_handle_rtp_packet`: sets `packet._data = depayload(codec, packet.payload)` (RTX already unwrapped),
  then calls `self.__jitter_buffer.add(packet)` for every packet, sends `self._send_rtcp_pli(packet.ssrc)`
  when it returns a PLI flag, and decodes only a frame that is not None (ForwardJitterBuffer
  returns None: the decoder thread idles).
- `_send_rtcp_pli(media_ssrc)` (coroutine): receiver_request_keyframe. A no-op until the receiver has
  its RTCP SSRC (`_set_rtcp_ssrc`, when the transceiver is made).
- `_handle_rtcp_packet(packet)` (coroutine), looked up on the instance by
  `RTCDtlsTransport._handle_rtcp_data` (`await recipient._handle_rtcp_packet(packet)` for each
  recipient of `RtpRouter.route_rtcp`, which sends an SR to `ssrc_table[packet.ssrc]`, learnt from
  `a=ssrc` or the first RTP packet): receiver_on_sender_report wraps it per instance; the original
  still runs.
- `aiortc.rtp.RtcpSrPacket.sender_info` with `ntp_timestamp` (64 bit) and `rtp_timestamp` (32 bit).

Sender (`aiortc.RTCRtpSender`): sender_route_keyframe, sender_forward, RtpOutput
- `_send_keyframe()`: called as `self._send_keyframe()` by `_handle_rtcp_packet` on PLI and FIR;
  sender_route_keyframe replaces it per instance.
- `_run_rtp(codec)`: started by `send()` as `asyncio.ensure_future(self._run_rtp(parameters.codecs[0]))`
  after `__mid`, `__rtp_header_extensions_map` and `__rtx_payload_type` are set, and
  `RTCPeerConnection.__connect` calls `send()` only once DTLS is connected; sender_forward replaces it.
  `stop()` waits for `__rtp_started`, cancels the task and waits for `__rtp_exited`: the
  replacement sets both.
- `_retransmit(seq)`: called as `await self._retransmit(seq)` by `_handle_rtcp_packet` for each NACKed
  sequence number; sender_forward replaces it (RtpOutput.retransmit, from the output's history).
- Set by `__init__` and used by RtpOutput: `_ssrc`, `_rtx_ssrc`, `transport`,
  `__rtp_header_extensions_map` (HeaderExtensionsMap), `__mid`, `__rtx_payload_type`,
  `__rtx_sequence_number`, `__rtp_started`, `__rtp_exited` (asyncio.Event), and the counters
  `_run_rtcp` puts in its sender reports: `__ntp_timestamp`, `__rtp_timestamp`, `__octet_count`,
  `__packet_count` (RtpOutput.send keeps them as `_run_rtp` does).
- What RtpOutput.send does as `_run_rtp` does: RTP timestamp origin + frame timestamp,
  `abs_send_time = (current_ntp_time() >> 14) & 0xFFFFFF`, `mid = self.__mid`, history at
  `seq % RTP_HISTORY_SIZE`, octets += len(payload), packets += 1, the header `RtpPacket.serialize`
  writes (aiortc parses RtpOutput's packet and serializes it back to the same bytes).
- `_retransmit`'s RTX: `wrap_rtx(packet, payload_type=__rtx_payload_type,
  sequence_number=__rtx_sequence_number, ssrc=_rtx_ssrc)`, then `__rtx_sequence_number` + 1, sent
  with `transport._send_rtp` (the bytes: test_units.test_rtx_wrap_matches_aiortc).
- Module level: `aiortc.rtcrtpsender.RTP_HISTORY_SIZE` (128), `random_sequence_number()`,
  `aiortc.utils.random32` / `uint16_add` / `uint16_gt`, `aiortc.clock.current_ntp_time`,
  `aiortc.rtp.HeaderExtensions` (`abs_send_time`, `mid`), `HeaderExtensionsMap.set()` ->
  (profile, value padded to 32 bits).

Transceiver and codecs: negotiated_codec, codec_capabilities, common_codecs, h264_profiles_register,
Packetizer, make_packet
- `RTCRtpTransceiver._codecs`: `[]` until `RTCPeerConnection.setRemoteDescription` sets it to
  `filter_preferred_codecs(find_common_codecs(CODECS[media.kind], media.rtp.codecs),
  transceiver._preferred_codecs)`; its first entry is what the sender sends (`codecs=transceiver._codecs`).
- `RTCRtpTransceiver.setCodecPreferences` accepts only capabilities `in get_capabilities(kind).codecs`
  (dataclass equality): codec_capabilities hands it aiortc's own capability objects.
- `filter_preferred_codecs` keeps a codec when `mimeType.lower()` and `codec.parameters ==
  pref.parameters` match, plus the RTX whose `apt` is its payload type. `find_common_codecs` returns
  deep copies of the *local* codec (its parameters, the offer's dynamic payload type) and matches
  H.264 on packetization-mode and profile only (`is_codec_compatible`): that is why the profiles
  h264_profiles_register adds take any level of their profile and equal their capability.
- `aiortc.codecs.CODECS`: `{"audio": [...], "video": [...]}` of RTCRtpCodecParameters, each video codec
  followed by its RTX (`{"apt": pt}`); the very object `aiortc.rtcpeerconnection` negotiates with and
  `get_capabilities` reads at call time (one RTX capability); aiortc's own payload types leave
  103-108 free; `aiortc.sdp.parse_h264_profile_level_id` knows Main, High and High 4:4:4 Predictive.
- `aiortc.rtcpeerconnection.find_common_codecs(local, remote)`: common_codecs.
- `get_encoder(codec).pack(av.Packet) -> (payloads, timestamp)` for VP8, H.264 (Annex B) and Opus, the
  timestamp being the packet's pts in the codec's clock (what `_next_encoded_frame` does with a
  pre-encoded packet): Packetizer, make_packet (`av.Packet(data)` with writable `pts`, `time_base`).

Jitter buffer (`aiortc.jitterbuffer`): ForwardJitterBuffer
- `JitterBuffer.__init__(capacity, prefetch=0, is_video=False)` sets `_capacity`, `_origin` (None),
  `_packets` (one slot per capacity), `_prefetch`, `_is_video`; `capacity` property.
- `add(packet)`: sets `_origin` on the first packet, restarts on a jump back of `MAX_MISORDER` or more
  and `smart_remove`s on overflow (both flag a PLI for video), stores the packet at
  `_packets[seq % _capacity]`, returns `(pli_flag, self._remove_frame(seq))`: the override returns
  None and frames leave through the hook's own `_pop_frame`.
- `remove(count)`: clears `count` slots from `_origin` on and advances it (mod 2**16).
- `JitterFrame(data, timestamp)`; `RtpPacket` takes a `_data` attribute (no `__slots__`).
- None of ForwardJitterBuffer's own names exists in aiortc's JitterBuffer (an upgrade adding one
  would be silently overridden or would override the hook's).

DTLS and ICE transport: RtpOutput (send, _route, retransmit)
- `RTCRtpSender.transport` is the `RTCDtlsTransport`: `_state` (`aiortc.rtcdtlstransport.State`,
  `CONNECTED` once up, `CLOSED` after), `_tx_srtp` (pylibsrtp Session, `allow_repeat_tx`) `.protect()`,
  `_send_rtp(data)` (refuses unless connected, protects, `self.transport._send`).
- `RTCDtlsTransport.transport` is the `RTCIceTransport`; its `_connection` the aioice `Connection`;
  `_connection._nominated[1]` the nominated `CandidatePair`, which `Connection.sendto` sends on with
  `pair.protocol.send_data(data, pair.remote_addr)` (`StunProtocol.transport.sendto`);
  `pair.protocol.transport` the asyncio datagram transport (`get_extra_info("socket")`,
  `get_write_buffer_size()`, `sendto`); `pair.remote_addr`.
- RTCP in: `_handle_rtcp_data` -> `RtpRouter.route_rtcp` -> the sender registered by
  `_register_rtp_sender` under `sender._ssrc`, by `media_ssrc` (PLI, FIR, NACK). RTP in:
  `_handle_rtp_data` -> `receiver._handle_rtp_packet(packet, arrival_time_ms=...)`.
- Assumed, not aiortc's: the server has no TURN candidates (session.py `iceServers=[]`); a relayed
  pair's transport (aioice TurnTransport) has no socket to duplicate.

aioice module globals (`aioice.ice`): ice_restrict, ice_loopback_only, _RangeLoop, _AsyncioForAioice
- `get_host_addresses(use_ipv4, use_ipv6)`: looked up as a module global by
  `Connection.gather_candidates` and called with those keywords; the hook keeps the original
  (captured at import) for `addresses=None`.
- `asyncio` (the module's global): `Connection.get_component_candidates` binds each host socket with
  `asyncio.get_running_loop()` then `loop.create_datagram_endpoint(lambda: StunProtocol(self),
  local_addr=(address, 0))` exactly (any other shape bypasses the port range) and reads
  `transport.get_extra_info("socket")`; every other `asyncio.X` aioice.ice uses exists in asyncio
  (the proxy forwards it).
- `CONSENT_INTERVAL`, `CONSENT_FAILURES`: module globals read at call time by `Connection.query_consent`.

Outside the hook module (found while auditing; they belong in the hook module)
- sfu/session.py `_negotiate` tells a codec refusal by `"parameters" in str(exc)`: aiortc's
  OperationError text "Failed to set remote {kind} description send parameters".
- sfu/sdp.py and sfu/session.py use `aiortc.sdp`: `SessionDescription.parse` and the media fields
  `kind`, `ice.usernameFragment`, `ice.password`, `dtls.fingerprints`, `direction`, `rtp.codecs`
  (`apt` parsed to int); `candidate_from_sdp`; `parse_h264_profile_level_id`; and
  `_real_profile` rewrites the answer's `a=fmtp:<pt> ...profile-level-id=` line.
- bench/sfu.py replaces `aioice.ice.StunProtocol.datagram_received(self, data, addr)` and reads
  `StunProtocol.transport` and `_RTCRtpReceiver__jitter_buffer.sink`.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import re
import socket
import struct
import time
import types
from fractions import Fraction
from importlib.metadata import version

import aioice
import aioice.ice
import aiortc
import aiortc.codecs
import aiortc.rtcpeerconnection
import aiortc.rtcrtpsender
import av
import pylibsrtp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCSessionDescription
from aiortc.codecs import CODECS, get_capabilities, get_encoder
from aiortc.jitterbuffer import MAX_MISORDER, JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter, State
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcpeerconnection import filter_preferred_codecs, find_common_codecs
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.rtp import (
    DYNAMIC_PAYLOAD_TYPES,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensions,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
    is_rtcp,
)
from aiortc.sdp import SessionDescription, candidate_from_sdp, parse_h264_profile_level_id

from sfu import aiortc_hooks
from sfu.aiortc_hooks import (
    EXTRA_H264_PROFILES,
    ForwardJitterBuffer,
    Packetizer,
    RtpOutput,
    codec_capabilities,
    common_codecs,
    make_packet,
    negotiated_codec,
    receiver_forward,
    receiver_on_sender_report,
    receiver_request_keyframe,
    sender_forward,
    sender_route_keyframe,
)

KEY = b"\x10\x02\x00\x9d\x01\x2a" + b"\x00" * 20  # a VP8 keyframe header: one RTP packet


# --- helpers ---------------------------------------------------------------------------------------

def _code(obj) -> str:
    return re.sub(r"\s+", "", inspect.getsource(obj))


def _pin(obj, hook: str, *snippets: str) -> None:
    """Each snippet (whitespace ignored) is still in `obj`'s source: `hook` relies on it."""
    code = _code(obj)
    name = getattr(obj, "__qualname__", repr(obj))
    for snippet in snippets:
        assert re.sub(r"\s+", "", snippet) in code, f"{name} no longer has `{snippet}`: {hook} relies on it"


def _in_order(obj, hook: str, *snippets: str) -> None:
    code = _code(obj)
    found = [code.find(re.sub(r"\s+", "", s)) for s in snippets]
    assert -1 not in found and found == sorted(found), f"{obj.__qualname__}: {snippets} not in this order ({hook})"


def _mangled(obj, owner: str, *names: str) -> None:
    for name in names:
        assert hasattr(obj, f"_{owner}__{name}"), f"{owner}.__{name} is gone"


async def _until(condition, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.002)


@contextlib.contextmanager
def _ice_state_kept():
    """ice_restrict / ice_loopback_only change process-wide aioice state: put all of it back."""
    saved = (dict(aiortc_hooks._ice), aioice.ice.get_host_addresses, aioice.ice.asyncio,
             aioice.ice.CONSENT_INTERVAL, aioice.ice.CONSENT_FAILURES)
    try:
        yield
    finally:
        aiortc_hooks._ice.update(saved[0])
        (aioice.ice.get_host_addresses, aioice.ice.asyncio, aioice.ice.CONSENT_INTERVAL,
         aioice.ice.CONSENT_FAILURES) = saved[1:]


class _Unread(MediaStreamTrack):
    kind = "video"

    async def recv(self):  # sender_forward replaces the RTP loop: never called
        raise MediaStreamError


@contextlib.asynccontextmanager
async def _linked():
    """Two aiortc peers over loopback: `tx` sends video through the sender hooks (as a subscriber
    session's sender does), `rx` receives it through the receiver hooks (as a publisher session's)."""
    link = types.SimpleNamespace(frames=[], reports=[], keyframes=[], outputs=[])
    with _ice_state_kept(), aiortc_hooks.ice_loopback_only():
        link.tx = tx = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        link.rx = rx = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            link.sending = tx.addTransceiver(_Unread(), direction="sendonly")
            link.sender = link.sending.sender
            sender_route_keyframe(link.sender, lambda: link.keyframes.append(1))
            sender_forward(link.sender, link.outputs.append)
            await tx.setLocalDescription(await tx.createOffer())
            await rx.setRemoteDescription(tx.localDescription)
            link.receiving = rx.getTransceivers()[0]
            link.receiver = link.receiving.receiver
            link.buffer = receiver_forward(link.receiver, lambda *frame: link.frames.append(frame))
            receiver_on_sender_report(link.receiver, lambda *report: link.reports.append(report))
            await rx.setLocalDescription(await rx.createAnswer())
            await tx.setRemoteDescription(rx.localDescription)
            await _until(lambda: link.outputs and link.outputs[-1] is not None and rx.connectionState == "connected")
            link.output = link.outputs[-1]
            link.codec = negotiated_codec(link.sending)
            yield link
        finally:
            await tx.close()
            await rx.close()


async def _deliver(link, count: int) -> list:
    """Send one-packet VP8 frames 3000 ticks apart until `count` reached the receiver's sink (the
    first one only syncs the ForwardJitterBuffer, and the receiver may start a moment late)."""
    packetizer, pts, sent = Packetizer(link.codec), 0, []
    while len(link.frames) < count:
        assert len(sent) < 200, "frames sent through RtpOutput never reached the receiver's sink"
        payloads, timestamp = packetizer.pack(KEY, pts)
        assert link.output.send(payloads, timestamp)
        sent.append(payloads)
        pts += 3000
        await asyncio.sleep(0.003)
    return sent


# --- the pins --------------------------------------------------------------------------------------

def test_pinned_versions_are_installed():
    installed = {name: version(name) for name in aiortc_hooks.PINNED}
    assert installed == aiortc_hooks.PINNED == {"aiortc": "1.16.0", "aioice": "0.13.0", "av": "18.1.0"}
    assert (aiortc.__version__, aioice.__version__) == (installed["aiortc"], installed["aioice"])


async def test_receiver_internals():
    # __init__: the two mangled fields, the buffers they start with
    _pin(RTCRtpReceiver.__init__, "receiver_forward", "self.__kind = kind",
         "self.__jitter_buffer = JitterBuffer(capacity=16, prefetch=4)",
         "self.__jitter_buffer = JitterBuffer(capacity=512, is_video=True)")
    # every packet: depayloaded into _data, then into the buffer; a PLI when it says so; None is not decoded
    _in_order(RTCRtpReceiver._handle_rtp_packet, "ForwardJitterBuffer",
              "packet._data = depayload(codec, packet.payload)",
              "pli_flag, encoded_frame = self.__jitter_buffer.add(packet)",
              "if pli_flag: await self._send_rtcp_pli(packet.ssrc)",
              "if encoded_frame is not None and self.__decoder_thread:")
    assert inspect.iscoroutinefunction(RTCRtpReceiver._send_rtcp_pli)
    assert list(inspect.signature(RTCRtpReceiver._send_rtcp_pli).parameters) == ["self", "media_ssrc"]
    assert inspect.iscoroutinefunction(RTCRtpReceiver._handle_rtcp_packet)
    assert list(inspect.signature(RTCRtpReceiver._handle_rtcp_packet).parameters) == ["self", "packet"]
    # an SR reaches receiver._handle_rtcp_packet, looked up on the instance at each packet
    _pin(RTCDtlsTransport._handle_rtcp_data, "receiver_on_sender_report",
         "for recipient in self._rtp_router.route_rtcp(packet): await recipient._handle_rtcp_packet(packet)")
    _pin(RtpRouter.route_rtcp, "receiver_on_sender_report",
         "if isinstance(packet, RtcpSrPacket): add_recipient(self.ssrc_table.get(packet.ssrc))")
    _pin(RtpRouter.route_rtp, "receiver_on_sender_report", "self.ssrc_table[packet.ssrc] = pt_receiver")
    assert [f.name for f in dataclasses.fields(RtcpSrPacket)][:2] == ["ssrc", "sender_info"]
    assert [f.name for f in dataclasses.fields(RtcpSenderInfo)][:2] == ["ntp_timestamp", "rtp_timestamp"]

    # real receivers, as RTCPeerConnection makes them
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        for kind, capacity, prefetch in (("video", 512, 0), ("audio", 16, 4)):
            receiver = pc.addTransceiver(kind, direction="recvonly").receiver
            assert receiver._RTCRtpReceiver__kind == kind
            original = receiver._RTCRtpReceiver__jitter_buffer
            assert type(original) is JitterBuffer
            assert (original._capacity, original._prefetch, original._is_video) == (capacity, prefetch, kind == "video")
            buffer = receiver_forward(receiver, lambda *frame: None)
            assert receiver._RTCRtpReceiver__jitter_buffer is buffer
            assert (buffer._capacity, buffer._is_video) == (capacity, kind == "video")
            assert receiver._RTCRtpReceiver__rtcp_ssrc is not None  # _send_rtcp_pli sends once this is set
    finally:
        await pc.close()

    # live: frames reach the sink, a PLI reaches the publisher, an SR reaches the callback and aiortc
    async with _linked() as link:
        sent = await _deliver(link, 2)
        assert [data for data, *_ in link.frames[:2]] == [KEY, KEY]
        assert link.frames[1][1] - link.frames[0][1] == 3000
        assert link.buffer.ssrc == link.sender._ssrc and len(sent) >= 3
        await receiver_request_keyframe(link.receiver, link.buffer.ssrc)
        await _until(lambda: link.keyframes)
        ntp = (3_900_000_000 << 32) | 0x12345678
        report = RtcpSrPacket(ssrc=link.sender._ssrc, sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp, rtp_timestamp=0xDEADBEEF, packet_count=1, octet_count=1))
        await link.receiver.transport._handle_rtcp_data(bytes(report))
        assert link.reports == [(ntp, 0xDEADBEEF)]
        assert link.receiver._RTCRtpReceiver__lsr[link.sender._ssrc] == (ntp >> 16) & 0xFFFFFFFF  # original ran


async def test_sender_internals():
    fields = ("rtp_header_extensions_map", "mid", "ntp_timestamp", "rtp_timestamp", "octet_count", "packet_count",
              "rtx_payload_type", "rtx_sequence_number", "rtp_started", "rtp_exited")
    init = _code(RTCRtpSender.__init__)
    for name in fields:
        assert re.search(rf"self\.__{name}[:=]", init), f"RTCRtpSender.__init__ no longer sets __{name}"
    _pin(RTCRtpSender.__init__, "RtpOutput", "self._ssrc = random32()", "self._rtx_ssrc = random32()",
         "self.__rtp_header_extensions_map = rtp.HeaderExtensionsMap()")
    _in_order(RTCRtpSender.send, "sender_forward / RtpOutput", "self.__mid = parameters.muxId",
              "self.__rtp_header_extensions_map.configure(parameters)",
              "self.__rtx_payload_type = codec.payloadType",
              "self.__rtp_task = asyncio.ensure_future(self._run_rtp(parameters.codecs[0]))")
    _pin(RTCRtpSender.stop, "sender_forward",
         "await asyncio.gather(self.__rtp_started.wait(), self.__rtcp_started.wait())", "self.__rtp_task.cancel()",
         "await asyncio.gather(self.__rtp_exited.wait(), self.__rtcp_exited.wait())")
    _pin(RTCRtpSender._handle_rtcp_packet, "sender_forward / sender_route_keyframe",
         "for seq in packet.lost: await self._retransmit(seq)", "RTCP_PSFB_FIR", "RTCP_PSFB_PLI",
         "self._send_keyframe()")
    _pin(RTCRtpSender._run_rtcp, "RtpOutput.send (sender reports)", "ntp_timestamp=self.__ntp_timestamp",
         "rtp_timestamp=self.__rtp_timestamp", "packet_count=self.__packet_count & 0xFFFFFFFF",
         "octet_count=self.__octet_count & 0xFFFFFFFF")
    _pin(RTCRtpSender._run_rtp, "RtpOutput.send (does the same per frame)",
         "timestamp = uint32_add(timestamp_origin, enc_frame.timestamp)",
         "packet.extensions.abs_send_time = (clock.current_ntp_time() >> 14) & 0x00FFFFFF",
         "packet.extensions.mid = self.__mid", "self.__rtp_history[packet.sequence_number % RTP_HISTORY_SIZE]",
         "self.__rtp_timestamp = packet.timestamp", "self.__octet_count += len(payload)", "self.__packet_count += 1",
         "sequence_number = random_sequence_number()", "timestamp_origin = random32()")
    _pin(RTCRtpSender._retransmit, "RtpOutput.retransmit",
         "packet = wrap_rtx(packet, payload_type=self.__rtx_payload_type, "
         "sequence_number=self.__rtx_sequence_number, ssrc=self._rtx_ssrc,)",
         "self.__rtx_sequence_number = uint16_add(self.__rtx_sequence_number, 1)",
         "await self.transport._send_rtp(packet_bytes)")
    _pin(RTCRtpSender._next_encoded_frame, "make_packet", "payloads, timestamp = self.__encoder.pack(data)")
    _pin(RTCPeerConnection._RTCPeerConnection__connect, "sender_forward (attach once DTLS is up)",
         'if dtlsTransport.state == "connected": if transceiver.currentDirection in ["sendonly", "sendrecv"]: '
         "await transceiver.sender.send(self.__localRtp(transceiver))")
    assert aiortc.rtcrtpsender.RTP_HISTORY_SIZE == aiortc_hooks.RTP_HISTORY_SIZE == 128
    assert all(0 <= aiortc.rtcrtpsender.random_sequence_number() < 32768 for _ in range(64))
    assert {"abs_send_time", "mid"} <= {f.name for f in dataclasses.fields(HeaderExtensions)}
    assert HeaderExtensionsMap().set(HeaderExtensions(mid="0")) == (0, b"")  # no ids configured: no extension

    async with _linked() as link:
        sender, output = link.sender, link.output
        assert isinstance(output, RtpOutput) and isinstance(sender._ssrc, int) and isinstance(sender._rtx_ssrc, int)
        _mangled(sender, "RTCRtpSender", *fields)
        assert sender._RTCRtpSender__mid == link.sending.mid is not None
        assert isinstance(sender._RTCRtpSender__rtp_header_extensions_map, HeaderExtensionsMap)
        assert sender._RTCRtpSender__rtp_started.is_set() and not sender._RTCRtpSender__rtp_exited.is_set()
        rtx_type = sender._RTCRtpSender__rtx_payload_type
        assert rtx_type is not None, "no RTX negotiated: RtpOutput.retransmit would send plain packets"
        assert (sender._RTCRtpSender__packet_count, sender._RTCRtpSender__octet_count) == (0, 0)

        sent = await _deliver(link, 1)
        assert sender._RTCRtpSender__packet_count == sum(len(p) for p in sent)
        assert sender._RTCRtpSender__octet_count == sum(len(x) for p in sent for x in p)
        assert sender._RTCRtpSender__ntp_timestamp > 0
        # the plain packet RtpOutput sent is the one aiortc would have serialized
        extensions_map = sender._RTCRtpSender__rtp_header_extensions_map
        sequence = (output._sequence - 1) & 0xFFFF
        plain, header_length = output._history[sequence % aiortc_hooks.RTP_HISTORY_SIZE]
        packet = RtpPacket.parse(plain, extensions_map)
        assert (packet.ssrc, packet.payload_type, packet.marker, packet.sequence_number) == (
            sender._ssrc, link.codec.payloadType, 1, sequence)
        assert packet.timestamp == sender._RTCRtpSender__rtp_timestamp
        assert packet.extensions.mid == link.sending.mid and packet.extensions.abs_send_time is not None
        assert packet.serialize(extensions_map) == plain and plain[header_length:] == packet.payload

        dtls = sender.transport
        # PLI and FIR from the subscriber: the keyframe callback
        for fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            await dtls._handle_rtcp_data(bytes(RtcpPsfbPacket(fmt=fmt, ssrc=1, media_ssrc=sender._ssrc)))
        assert len(link.keyframes) == 2
        # a NACK: RTX from the output's history, through DTLS's _send_rtp
        rtx_sequence = sender._RTCRtpSender__rtx_sequence_number
        out = []
        original = dtls._send_rtp

        async def send_rtp(data: bytes) -> None:
            out.append(data)
            await original(data)

        dtls._send_rtp = send_rtp
        try:
            nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=sender._ssrc, lost=[sequence])
            await dtls._handle_rtcp_data(bytes(nack))
        finally:
            del dtls._send_rtp
        rtx = [RtpPacket.parse(d, extensions_map) for d in out if not is_rtcp(d)]
        assert len(rtx) == 1
        assert (rtx[0].payload_type, rtx[0].ssrc, rtx[0].sequence_number) == (rtx_type, sender._rtx_ssrc, rtx_sequence)
        assert rtx[0].payload == struct.pack("!H", sequence) + packet.payload
        assert sender._RTCRtpSender__rtx_sequence_number == (rtx_sequence + 1) & 0xFFFF

        await link.tx.close()  # RTCRtpSender.stop: cancels the replaced _run_rtp
        assert link.outputs[-1] is None and sender._RTCRtpSender__rtp_exited.is_set() and output._socket is None


async def test_transceiver_and_codec_internals():
    aiortc_hooks.h264_profiles_register()  # done by SfuConfig.ready already; once per process
    # CODECS layout: what h264_profiles_register appends to, and what negotiation and capabilities read
    assert set(CODECS) == {"audio", "video"}
    assert aiortc.rtcpeerconnection.CODECS is CODECS is aiortc_hooks.CODECS
    video = CODECS["video"]
    assert all(isinstance(c, RTCRtpCodecParameters) for c in video + CODECS["audio"])
    for codec, rtx in zip(video[::2], video[1::2], strict=True):
        assert rtx.mimeType == "video/rtx" and rtx.parameters == {"apt": codec.payloadType}, codec
    payload_types = [c.payloadType for c in video + CODECS["audio"]]
    assert len(payload_types) == len(set(payload_types))
    assert all(c.payloadType in DYNAMIC_PAYLOAD_TYPES for c in video)
    h264 = {c.parameters["profile-level-id"]: c for c in video if c.mimeType == "video/H264"}
    assert [c.payloadType for c in video if c.mimeType != "video/rtx"][:3] == [97, 99, 101]  # aiortc's own
    assert set(h264) == {"42001f", "42e01f", *EXTRA_H264_PROFILES}
    assert [h264[p].payloadType for p in EXTRA_H264_PROFILES] == [103, 105, 107]
    profiles = {parse_h264_profile_level_id(p)[0] for p in h264}
    assert len(profiles) == len(h264), "two H.264 entries of one profile: find_common_codecs takes only the first"
    _pin(get_capabilities, "codec_capabilities", "for params in CODECS[kind]:")
    capabilities = get_capabilities("video").codecs
    assert [c.mimeType for c in capabilities].count("video/rtx") == 1
    for profile, codec in h264.items():
        caps = codec_capabilities(codec)
        assert [c.mimeType for c in caps] == ["video/H264", "video/rtx"] and caps[0].parameters == codec.parameters
        assert all(c in capabilities for c in caps), profile
    _pin(RTCRtpTransceiver.setCodecPreferences, "codec_capabilities",
         "capabilities = get_capabilities(self.kind).codecs", "if codec not in capabilities:")
    _pin(filter_preferred_codecs, "h264_profiles_register / codec_capabilities",
         "codec.mimeType.lower() == pref.mimeType.lower() and codec.parameters == pref.parameters",
         'if rtx.parameters["apt"] == codec.payloadType:')
    _pin(RTCPeerConnection.setRemoteDescription, "negotiated_codec",
         "find_common_codecs(CODECS[media.kind], media.rtp.codecs)", "transceiver._preferred_codecs",
         "transceiver._codecs = common")
    _pin(RTCPeerConnection, "negotiated_codec (the sender sends _codecs[0])", "codecs=transceiver._codecs")
    assert aiortc_hooks.find_common_codecs is find_common_codecs
    # find_common_codecs: the local entry (its parameters) at the offer's payload type, any level of a profile
    offered = [RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=120, parameters={
                   "packetization-mode": "1", "profile-level-id": "640033", "level-asymmetry-allowed": "1"}),
               RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=121, parameters={"apt": 120})]
    common = find_common_codecs(video, offered)
    assert [(c.payloadType, c.parameters) for c in common] == [(120, h264["64001f"].parameters), (121, {"apt": 120})]
    assert common[0] is not h264["64001f"] and h264["64001f"].payloadType == 105  # a copy
    assert [c.payloadType for c in common_codecs("video", offered)] == [120]

    with _ice_state_kept(), aiortc_hooks.ice_loopback_only():
        client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            client.addTransceiver("video", direction="sendonly")
            await client.setLocalDescription(await client.createOffer())
            offer = client.localDescription.sdp
            media = SessionDescription.parse(offer).media[0]
            main = next(c for c in common_codecs("video", media.rtp.codecs)
                        if c.parameters.get("profile-level-id") == "4d001f")
            transceiver = server.addTransceiver("video", direction="recvonly")
            assert transceiver._codecs == [] and negotiated_codec(transceiver) is None
            transceiver.setCodecPreferences(codec_capabilities(main))
            await server.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            codec = negotiated_codec(transceiver)
            assert (codec.mimeType, codec.payloadType, codec.parameters) == ("video/H264", main.payloadType,
                                                                              main.parameters)
            assert [(c.mimeType, c.parameters) for c in transceiver._codecs] == [
                ("video/H264", main.parameters), ("video/rtx", {"apt": main.payloadType})]
        finally:
            await client.close()
            await server.close()

    # Packetizer / make_packet: pre-encoded frames are only packetized, timestamps in the codec's clock
    packet = make_packet(KEY, 1234, Fraction(1, 90000))
    assert isinstance(packet, av.Packet) and (packet.pts, packet.time_base) == (1234, Fraction(1, 90000))
    annexb = b"\x00\x00\x00\x01\x65" + b"\x11" * 40
    for codec, data, depacketized in (
            (RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97), KEY, None),
            (h264["42e01f"], annexb, [annexb[4:]]),
            (RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111),
             b"\xfc\x01", [b"\xfc\x01"])):
        payloads, timestamp = get_encoder(codec).pack(make_packet(data, 96000, Fraction(1, codec.clockRate)))
        assert timestamp == 96000 and payloads and all(isinstance(p, bytes) for p in payloads), codec.mimeType
        assert depacketized is None or payloads == depacketized, codec.mimeType
        assert Packetizer(codec).pack(data, 96000)[1] == 96000


def test_jitter_buffer_internals():
    assert list(inspect.signature(JitterBuffer.__init__).parameters) == ["self", "capacity", "prefetch", "is_video"]
    buffer = JitterBuffer(capacity=512, is_video=True)
    assert (buffer._capacity, buffer.capacity, buffer._origin, buffer._prefetch, buffer._is_video) == (
        512, 512, None, 0, True)
    assert buffer._packets == [None] * 512
    _pin(JitterBuffer.add, "ForwardJitterBuffer",
         "self._packets[pos] = packet", "return pli_flag, self._remove_frame(packet.sequence_number)")

    calls = []

    class Probe(JitterBuffer):
        def _remove_frame(self, sequence_number):
            calls.append(sequence_number)
            return None

    def rtp(seq: int, ts: int = 0) -> RtpPacket:
        packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts)
        packet._data = b"x"  # what RTCRtpReceiver._handle_rtp_packet sets
        return packet

    probe = Probe(capacity=512, is_video=True)
    first = rtp(65534)
    assert probe.add(first) == (False, None) and calls == [65534]
    assert probe._origin == 65534 and probe._packets[65534 % 512] is first
    # remove: clears from _origin on and advances it, wrapping at 2**16
    probe.remove(3)
    assert probe._origin == 1 and probe._packets[65534 % 512] is None
    # a jump back of MAX_MISORDER or more restarts the buffer and flags a PLI (video)
    assert probe.add(rtp(10)) == (False, None)
    assert probe.add(rtp((1 - MAX_MISORDER + 1) & 0xFFFF)) == (False, None)  # late, dropped
    back = (1 - MAX_MISORDER) & 0xFFFF
    pli, _ = probe.add(rtp(back))
    assert pli and probe._origin == back
    # overflow: smart_remove, PLI
    pli, _ = probe.add(rtp((back + 512) & 0xFFFF, ts=1))
    assert pli
    audio = Probe(capacity=16, prefetch=4)
    assert audio.add(rtp(1)) == (False, None)
    assert audio.add(rtp(back)) == (False, None) and audio._origin == back  # restarted, but no PLI for audio

    frame = JitterFrame(data=b"ab", timestamp=7)
    assert (frame.data, frame.timestamp) == (b"ab", 7)
    # the hook overrides add and _remove_frame and calls remove: all still there, none of its own names taken
    assert {"add", "_remove_frame", "remove", "smart_remove", "capacity"} <= set(dir(JitterBuffer))
    own = {"sink", "ssrc", "_clock", "_synced", "_after_loss", "_newest", "_holes", "_scanned", "_abandoned",
           "_ts_last", "_ts_base", "_unwrap", "_sync", "_drain", "_pop_frame", "_take", "_hole_since", "_give_up",
           "_resync"}
    forward = ForwardJitterBuffer(lambda *a: None, is_video=True)
    assert own <= set(dir(forward))
    taken = own & (set(dir(JitterBuffer)) | set(vars(JitterBuffer(capacity=16))))
    assert not taken, f"aiortc's JitterBuffer now has {taken}: ForwardJitterBuffer would clash"
    assert set(vars(JitterBuffer(capacity=16))) <= set(vars(forward))


async def test_dtls_and_ice_transport_internals():
    _pin(RTCDtlsTransport.__init__, "RtpOutput.send", "self._state = State.NEW", "self._tx_srtp: Session = None")
    _pin(RTCDtlsTransport._setup_srtp, "RtpOutput.send", "tx_policy.allow_repeat_tx = True",
         "self._tx_srtp = Session(tx_policy)")
    _in_order(RTCDtlsTransport._send_rtp, "RtpOutput.retransmit",
              "if self._state != State.CONNECTED: raise ConnectionError", "data = self._tx_srtp.protect(data)",
              "await self.transport._send(data)")
    _pin(RTCDtlsTransport._handle_rtp_data, "receiver_forward",
         "await receiver._handle_rtp_packet(packet, arrival_time_ms=arrival_time_ms)")
    _pin(RTCDtlsTransport._register_rtp_sender, "sender_route_keyframe / sender_forward",
         "self._rtp_router.register_sender(sender, ssrc=sender._ssrc)")
    _pin(RtpRouter.route_rtcp, "sender_route_keyframe / sender_forward",
         "add_recipient(self.senders.get(packet.media_ssrc))")
    _pin(RTCIceTransport.__init__, "RtpOutput._route", "self._connection = gatherer._connection",
         "self._send = self._connection.send")
    _pin(aioice.Connection.send, "RtpOutput._route", "await self.sendto(data, 1)")
    _pin(aioice.Connection.sendto, "RtpOutput._route", "active_pair = self._nominated.get(component)",
         "await active_pair.protocol.send_data(data, active_pair.remote_addr)")
    _pin(aioice.ice.StunProtocol.send_data, "RtpOutput.send", "self.transport.sendto(data, addr)")
    _pin(aioice.ice.StunProtocol.connection_made, "RtpOutput._route", "self.transport = cast(")
    assert isinstance(aioice.ice.CandidatePair.remote_addr, property)
    assert aiortc_hooks.DtlsState is State and State.CONNECTED.name == "CONNECTED"

    async with _linked() as link:
        dtls = link.sender.transport
        assert isinstance(dtls, RTCDtlsTransport) and dtls._state is State.CONNECTED
        assert isinstance(dtls._tx_srtp, pylibsrtp.Session) and callable(dtls._tx_srtp.protect)
        assert isinstance(dtls.transport, RTCIceTransport)
        connection = dtls.transport._connection
        assert isinstance(connection, aioice.Connection) and isinstance(connection._nominated, dict)
        pair = connection._nominated.get(1)
        assert isinstance(pair, aioice.ice.CandidatePair) and isinstance(pair.protocol, aioice.ice.StunProtocol)
        transport = pair.protocol.transport
        sock = transport.get_extra_info("socket")
        assert sock.fileno() >= 0 and transport.get_write_buffer_size() == 0 and callable(transport.sendto)
        their = link.receiver.transport.transport._connection._nominated[1]
        assert pair.remote_addr == their.local_addr and sock.getsockname() == pair.local_addr
        # RtpOutput._route: that pair, through a duplicate of its socket
        assert link.output._route() is pair
        assert link.output._socket.fileno() != sock.fileno() and link.output._socket.getsockname() == pair.local_addr
        await _deliver(link, 1)  # protected with _tx_srtp, sent on the pair's socket, unprotected by the peer

        await link.tx.close()
        assert dtls._state is State.CLOSED
        assert link.output.send([b"x"], 0) is False


async def test_aioice_module_globals():
    _pin(aioice.Connection.gather_candidates, "ice_restrict (addresses)",
         "addresses = get_host_addresses(use_ipv4=self._use_ipv4, use_ipv6=self._use_ipv6)")
    original = aiortc_hooks._original_get_host_addresses
    assert (original.__module__, original.__name__) == ("aioice.ice", "get_host_addresses")
    assert list(inspect.signature(original).parameters) == ["use_ipv4", "use_ipv6"]
    assert list(inspect.signature(aiortc_hooks._host_addresses).parameters) == ["use_ipv4", "use_ipv6"]
    _in_order(aioice.Connection.get_component_candidates, "ice_restrict (ports): _RangeLoop",
              "loop = asyncio.get_running_loop()",
              "transport, protocol = await loop.create_datagram_endpoint(lambda: StunProtocol(self), "
              "local_addr=(address, 0))",
              'sock = transport.get_extra_info("socket")')
    source = inspect.getsource(aioice.ice)
    assert re.search(r"^import asyncio$", source, re.M)
    used = set(re.findall(r"\basyncio\.(\w+)", source))
    assert "get_running_loop" in used and not {name for name in used if not hasattr(asyncio, name)}
    _pin(aioice.Connection.query_consent, "ice_restrict (consent)", "await asyncio.sleep(CONSENT_INTERVAL *",
         "if failures >= CONSENT_FAILURES:")
    assert isinstance(aioice.ice.CONSENT_INTERVAL, int | float) and isinstance(aioice.ice.CONSENT_FAILURES, int)

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with _ice_state_kept():
        aiortc_hooks.ice_restrict(["127.0.0.1"], consent_interval=0.25, consent_failures=2, ports=(port, port))
        assert (aioice.ice.CONSENT_INTERVAL, aioice.ice.CONSENT_FAILURES) == (0.25, 2)
        assert aioice.ice.get_host_addresses is aiortc_hooks._host_addresses
        assert isinstance(aioice.ice.asyncio, aiortc_hooks._AsyncioForAioice)
        for ports in ((port, port), None):
            if ports is None:
                aiortc_hooks.ice_restrict(["127.0.0.1"])
                assert aioice.ice.asyncio is asyncio
            connection = aioice.Connection(ice_controlling=True)
            try:
                await connection.gather_candidates()
                hosts = [(c.host, c.port) for c in connection.local_candidates]
                assert [h for h, _ in hosts] == ["127.0.0.1"]
                assert ports is None or hosts == [("127.0.0.1", port)], "host socket not bound in the port range"
            finally:
                await connection.close()


def test_aiortc_behaviour_relied_on_outside_the_hook_module():
    """Not the hook module's: sfu/session.py, sfu/sdp.py and bench/sfu.py lean on these too."""
    _pin(RTCPeerConnection.setRemoteDescription, "sfu/session.py _negotiate (\"parameters\" in str(exc))",
         'raise OperationError("Failed to set remote {} description send parameters".format(')
    fingerprint = ":".join(["AB"] * 32)
    offer = SessionDescription.parse("\r\n".join([
        "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "c=IN IP4 0.0.0.0", "a=mid:0", "a=sendonly", "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000", "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96", "a=ice-ufrag:abcd",
        "a=ice-pwd:0123456789abcdefghijkl", f"a=fingerprint:sha-256 {fingerprint}", "a=setup:actpass", ""]))
    media = offer.media[0]
    assert (media.kind, media.direction, media.ice.usernameFragment, media.ice.password) == (
        "video", "sendonly", "abcd", "0123456789abcdefghijkl")
    assert media.dtls.fingerprints[0].value == fingerprint
    assert [(c.mimeType, c.payloadType, c.parameters) for c in media.rtp.codecs] == [
        ("video/VP8", 96, {}), ("video/rtx", 97, {"apt": 96})]  # apt an int: find_common_codecs needs it
    candidate = candidate_from_sdp("1 1 udp 2130706431 127.0.0.1 5000 typ host")
    candidate.sdpMid, candidate.sdpMLineIndex = "0", 0
    assert (candidate.ip, candidate.port, candidate.type) == ("127.0.0.1", 5000, "host")
    assert parse_h264_profile_level_id("4d0032")[0] == parse_h264_profile_level_id("4d001f")[0]
    _pin(aiortc.sdp.MediaDescription.__str__, "sfu/session.py _real_profile", 'f"a=fmtp:{codec.payloadType} {params}"')
    # bench/sfu.py kernel_arrivals
    assert list(inspect.signature(aioice.ice.StunProtocol.datagram_received).parameters) == ["self", "data", "addr"]
    assert "transport" in aioice.ice.StunProtocol.__annotations__
