"""Plain-class tests: the aiortc hook pin, jitter buffer, keyframes, throttle, fan-out, TURN, SDP checks."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from fractions import Fraction
from importlib.metadata import version

import av
import pytest
from aiortc import RTCRtpSender
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from sfu import aiortc_hooks
from sfu.aiortc_hooks import ForwardJitterBuffer, codec_capabilities, make_packet
from sfu.forwarder import VIDEO_QUEUE, TrackForwarder
from sfu.ice import turn_credentials
from sfu.keyframe import KeyframeThrottle, is_keyframe
from sfu.sdp import SfuError, offer_parse

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
KEY = b"\x10\x02\x00\x9d\x01\x2a" + b"\x00" * 20
DELTA = b"\x11\x02\x00" + b"\x00" * 20


def test_hooks_are_pinned_to_these_versions():
    # If this fails, aiortc/aioice/av changed: re-check every hook point in sfu/aiortc_hooks.py.
    assert {name: version(name) for name in aiortc_hooks.PINNED} == aiortc_hooks.PINNED
    from aiortc.rtcrtpreceiver import RTCRtpReceiver
    assert hasattr(RTCRtpReceiver, "_send_rtcp_pli") and hasattr(RTCRtpSender, "_send_keyframe")
    import inspect
    source = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    assert "self.__jitter_buffer.add(packet)" in source
    assert "self._send_keyframe()" in inspect.getsource(RTCRtpSender._handle_rtcp_packet)


def _rtp(seq: int, ts: int, marker: int = 0, data: bytes = b"x") -> RtpPacket:
    packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, marker=marker, ssrc=1234)
    packet._data = data
    return packet


def test_jitter_buffer_emits_on_marker_without_waiting_for_the_next_frame():
    out = []
    buffer = ForwardJitterBuffer(lambda *a: out.append(a), is_video=True, clock=lambda: 0.0)
    buffer.add(_rtp(9, 0, marker=1))  # syncs on the first marker
    buffer.add(_rtp(10, 3000, data=b"a"))
    buffer.add(_rtp(11, 3000, marker=1, data=b"b"))
    assert [(d, ts) for d, ts, _, _ in out] == [(b"ab", 3000)]
    buffer.add(_rtp(13, 6000, marker=1, data=b"d"))  # 12 missing: wait for the NACKed packet
    assert len(out) == 1
    buffer.add(_rtp(12, 6000, data=b"c"))
    assert out[-1][:2] == (b"cd", 6000) and buffer.ssrc == 1234


def test_jitter_buffer_gives_up_on_a_lost_packet_and_flags_the_loss():
    now = [0.0]
    out = []
    buffer = ForwardJitterBuffer(lambda *a: out.append(a), is_video=True, clock=lambda: now[0])
    buffer.add(_rtp(1, 0, marker=1))
    buffer.add(_rtp(3, 3000, marker=1))  # 2 lost for good
    now[0] = 1.0
    pli, _ = buffer.add(_rtp(4, 6000, marker=1, data=b"n"))
    assert pli
    buffer.add(_rtp(5, 9000, marker=1, data=b"m"))
    assert out and out[-1][3] is False and any(after_loss for *_, after_loss in out)


def test_audio_frames_pass_at_once():
    out = []
    buffer = ForwardJitterBuffer(lambda *a: out.append(a), is_video=False)
    for seq in (1, 2, 4, 3):
        buffer.add(_rtp(seq, seq * 960))
    assert [ts for _, ts, _, _ in out] == [960, 1920, 3840]  # the late one is dropped


def test_keyframe_detection():
    assert is_keyframe("VP8", KEY) and not is_keyframe("VP8", DELTA)
    assert is_keyframe("H264", b"\x00\x00\x00\x01\x67abc\x00\x00\x00\x01\x65xyz")
    assert not is_keyframe("H264", b"\x00\x00\x00\x01\x41abc")
    assert is_keyframe("opus", b"\x01")


async def test_throttle_coalesces_a_burst():
    sent = []
    throttle = KeyframeThrottle(lambda: sent.append(1), interval=0.1)
    for _ in range(16):
        throttle.request()
    assert len(sent) == 1
    await asyncio.sleep(0.15)
    assert len(sent) == 2 and throttle.coalesced == 15
    throttle.close()


def test_fanout_starts_at_keyframe_and_a_slow_subscriber_skips_to_the_next():
    asks = []
    forwarder = TrackForwarder("video", VP8, lambda: asks.append(1))
    fast, slow = forwarder.subscribe(), forwarder.subscribe()
    forwarder.on_frame(DELTA, 0, 0.0, False)
    assert len(fast._queue) == 0  # nothing before a keyframe
    forwarder.on_frame(KEY, 3000, 0.0, False)
    for i in range(VIDEO_QUEUE + 5):
        forwarder.on_frame(DELTA, 6000 + i * 3000, 0.0, False)
        fast._queue.clear()  # the fast one keeps up
    assert slow.need_keyframe and len(slow._queue) == 0 and slow.dropped > VIDEO_QUEUE
    assert not fast.need_keyframe
    forwarder.on_frame(KEY, 10**6, 0.0, False)
    assert len(slow._queue) == 1 and len(fast._queue) == 1 and fast._queue[0] is slow._queue[0]  # one packet
    assert asks


def test_sender_only_packetizes_our_packets():
    packet = make_packet(KEY, 90000, Fraction(1, 90000))
    payloads, timestamp = get_encoder(VP8).pack(packet)
    assert timestamp == 90000 and b"".join(p[4:] for p in payloads).endswith(KEY[6:])
    h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"][0]
    codec = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102, parameters=h264.parameters)
    assert [c.mimeType for c in codec_capabilities(codec)] == ["video/H264", "video/rtx"]
    assert isinstance(packet, av.Packet)


def test_turn_rest_credentials():
    username, credential = turn_credentials("alice", secret="s3cret", ttl=3600, now=1000)
    assert username == "4600:alice"
    assert credential == base64.b64encode(hmac.new(b"s3cret", b"4600:alice", hashlib.sha1).digest()).decode()


@pytest.mark.parametrize("text,code", [
    ("", "bad_sdp"), ("garbage", "bad_sdp"), ("v=0\r\n", "no_media"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n"
     "a=mid:0\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n", "bad_sdp"),
])
def test_offer_refusals(text, code):
    with pytest.raises(SfuError) as error:
        offer_parse(text, sending=True)
    assert error.value.code == code and error.value.status == 400
