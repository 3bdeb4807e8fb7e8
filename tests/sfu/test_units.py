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

from media.codecs import avc, vp8
from media.config import MediaConfig
from media.hub.stream import Stream
from media.hub.unit import AccessUnit
from sfu import aiortc_hooks
from sfu.aiortc_hooks import ForwardJitterBuffer, codec_capabilities, make_packet
from sfu.from_hub import StreamOut
from sfu.ice import turn_credentials
from sfu.keyframe import KeyframeThrottle
from sfu.sdp import SfuError, offer_parse
from sfu.to_hub import WebRtcSource
from sfu.udpsend import send_burst

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
    # sender_forward replaces _run_rtp and _retransmit and keeps these up to date instead
    init = inspect.getsource(RTCRtpSender.__init__)
    for name in ("__rtp_header_extensions_map", "__mid", "__ntp_timestamp", "__rtp_timestamp", "__octet_count",
                 "__packet_count", "__rtx_payload_type", "__rtx_sequence_number", "__rtp_started", "__rtp_exited"):
        assert f"self.{name} " in init or f"self.{name}:" in init, name
    assert "self._run_rtp(parameters.codecs[0])" in inspect.getsource(RTCRtpSender.send)
    assert "self._retransmit(seq)" in inspect.getsource(RTCRtpSender._handle_rtcp_packet)


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


async def test_webrtc_frames_become_units_on_one_clock_from_zero():
    """VP8 keyframes detected, a loss drops frames until the next keyframe and asks for one."""
    asks = []
    source = WebRtcSource(lambda: asks.append(1))
    video = source.track("video", "VP8", 90000)
    audio = source.track("audio", "opus", 48000)
    stream = Stream("room", MediaConfig())
    source.attach(stream)
    assert stream.tracks() == {"video": "vp8", "audio": "opus"} and stream.keyframe_source is not None
    got = []
    stream.add_sink(type("Sink", (), {"on_entry": lambda self, e: got.append(e.unit), "stream_ended": lambda *a: None,
                                      "viewer_count": 0})())
    video.on_frame(DELTA, 1000, 0.0, False)  # before any keyframe: dropped, a keyframe asked for
    assert got == [] and asks
    video.on_frame(KEY, 1000 + 3000, 0.0, False)
    audio.on_frame(b"\x01", 500, 0.0, False)
    video.on_frame(DELTA, 1000 + 6000, 0.0, False)
    video.on_frame(DELTA, 1000 + 12000, 0.0, True)  # after a loss: dropped
    video.on_frame(KEY, 1000 + 15000, 0.0, False)
    kinds = [(u.kind, u.codec, u.keyframe, u.config) for u in got]
    assert kinds == [("video", "vp8", True, False), ("audio", "opus", False, True), ("audio", "opus", True, False),
                     ("video", "vp8", False, False), ("video", "vp8", True, False)]
    video_dts = [u.dts for u in got if u.kind == "video"]
    assert video_dts[0] == 0 and video_dts == sorted(video_dts)
    assert video_dts[1] - video_dts[0] == 3000 and video_dts[2] - video_dts[0] == 12000  # 90 kHz, the RTP clock


async def test_sender_reports_put_audio_and_video_on_the_senders_clock():
    wall = [1000.0]
    source = WebRtcSource(lambda: None)
    source.clock.wall = lambda: wall[0]
    video = source.track("video", "VP8", 90000)
    audio = source.track("audio", "opus", 48000)
    stream = Stream("room", MediaConfig())
    source.attach(stream)
    ntp = lambda t: int((t + 2208988800) * (1 << 32))  # noqa: E731
    # The sender's clock is 50 s ahead of ours; video RTP 90000 <-> its t=1050, audio 48000 <-> t=1050.2
    video.sender_report(ntp(1050.0), 90000)
    audio.sender_report(ntp(1050.2), 48000)
    video.on_frame(KEY, 90000, 0.0, False)  # sender time 1050.0: hub 0
    audio.on_frame(b"\x01", 48000 + 4800, 0.0, False)  # sender time 1050.3
    units = [e.unit for e in stream.gop]
    assert units[0].dts == 0
    assert [u.dts for u in units if u.kind == "audio" and not u.config] == [27000]  # 0.3 s


def test_keyframe_detection():
    assert vp8.is_keyframe(KEY) and not vp8.is_keyframe(DELTA)
    assert avc.has_idr(avc.split_annexb(b"\x00\x00\x00\x01\x67abc\x00\x00\x00\x01\x65xyz"))
    assert not avc.has_idr(avc.split_annexb(b"\x00\x00\x00\x01\x41abc"))


async def test_throttle_coalesces_a_burst():
    sent = []
    throttle = KeyframeThrottle(lambda: sent.append(1), interval=0.1)
    for _ in range(16):
        throttle.request()
    assert len(sent) == 1
    await asyncio.sleep(0.15)
    assert len(sent) == 2 and throttle.coalesced == 15
    throttle.close()


class FakeOutput:
    def __init__(self) -> None:
        self.frames: list[tuple[list[bytes], int]] = []
        self.stalled = False

    def send(self, payloads: list[bytes], timestamp: int) -> bool:
        if self.stalled:
            return False
        self.frames.append((payloads, timestamp))
        return True


def vp8_unit(data: bytes, dts: int) -> AccessUnit:
    return AccessUnit("video", "vp8", dts, dts, data, keyframe=vp8.is_keyframe(data))


def test_fanout_starts_at_keyframe_and_a_stalled_subscriber_skips_to_the_next():
    asks = []
    stream = Stream("room", MediaConfig())
    stream.declare("video", "vp8")
    stream.keyframe_source = lambda: asks.append(1)
    out = StreamOut(stream).track("video")
    fast, slow = out.subscribe(), out.subscribe()
    fast.attach(FakeOutput())
    slow.attach(FakeOutput())
    stream.write(vp8_unit(DELTA, 0))
    assert fast.output.frames == []  # nothing before a keyframe
    stream.write(vp8_unit(KEY, 3000))
    assert len(fast.output.frames) == 1 and fast.output.frames[0][1] == 3000
    slow.output.stalled = True
    asks.clear()
    for i in range(5):
        stream.write(vp8_unit(DELTA, 6000 + i * 3000))
    assert slow.need_keyframe and slow.dropped == 1 + 5 and asks
    slow.output.stalled = False
    stream.write(vp8_unit(DELTA, 30000))
    assert len(slow.output.frames) == 1 and not fast.need_keyframe and len(fast.output.frames) == 7
    stream.write(vp8_unit(KEY, 10**6))
    assert slow.output.frames[-1][0] is fast.output.frames[-1][0]  # packetized once for both
    assert len(out.latency) == 8 + 2
    assert stream.viewer_count == 2


async def test_a_subscriber_of_a_stream_without_keyframes_on_demand_starts_from_the_gop_cache():
    """An RTMP stream cannot make a keyframe: the GOP goes out at once, squeezed 1 ms apart to end at
    the newest cached frame's own timestamp, then the live frames follow with theirs."""
    stream = Stream("room", MediaConfig())
    stream.declare("video", "vp8")
    stream.write(vp8_unit(KEY, 0))
    for i in range(1, 10):
        stream.write(vp8_unit(DELTA, i * 3000))
    out = StreamOut(stream).track("video")
    viewer = out.subscribe()
    viewer.attach(FakeOutput())
    stamps = [ts for _, ts in viewer.output.frames]
    assert len(stamps) == 10 and stamps[-1] == 27000 and stamps[0] == 27000 - 9 * 90
    stream.write(vp8_unit(DELTA, 30000))
    assert viewer.output.frames[-1][1] == 30000 and not viewer.need_keyframe


def test_rtx_wrap_matches_aiortc():
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtp import HeaderExtensionsMap, wrap_rtx

    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
        RTCRtpHeaderExtensionParameters(id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time")]))
    packet = RtpPacket(payload_type=96, marker=1, sequence_number=4242, timestamp=123456, ssrc=777, payload=b"xyz")
    packet.extensions.mid, packet.extensions.abs_send_time = "0", 0x123456
    plain = packet.serialize(extensions)
    header_length = len(plain) - 3
    expected = wrap_rtx(packet, payload_type=97, sequence_number=9, ssrc=888).serialize(extensions)
    assert aiortc_hooks.rtx_wrap(plain, header_length, 97, 9, 888) == expected


def test_send_burst_uses_one_call_per_run_of_equal_sizes():
    import socket
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setblocking(False)
    burst = [b"a" * 1200, b"b" * 1200, b"c" * 300, b"d" * 1200, b"e" * 1300, b"f" * 10]
    calls = send_burst(sender, burst, receiver.getsockname())
    assert calls <= 4
    receiver.settimeout(1)
    assert [receiver.recv(2000) for _ in burst] == burst
    sender.close()
    receiver.close()


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


SPS_HIGH = bytes.fromhex("6764001eacb405017fcb08000003000800000301e078b175")  # x264 High 3.0, 640x360
PPS_HIGH = bytes.fromhex("68ef0fcb")


def h264_offer(*profiles: str) -> str:
    rtpmaps = "".join(f"a=rtpmap:{96 + i} H264/90000\r\na=fmtp:{96 + i} level-asymmetry-allowed=1;"
                      f"packetization-mode=1;profile-level-id={p}\r\n" for i, p in enumerate(profiles))
    pts = " ".join(str(96 + i) for i in range(len(profiles)))
    return ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
            f"m=video 9 UDP/TLS/RTP/SAVPF {pts}\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n"
            "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
            "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\na=rtcp-mux\r\n" + rtpmaps)


@pytest.mark.parametrize("offered,answered,labelled", [
    (("42e01f", "4d001f", "64001f"), "64001f", False),  # the stream's own profile when offered
    (("42001f", "42e01f", "4d001f", "f4001f"), "42e01f", True),  # Chromium: no High; labelled
])
def test_a_viewer_gets_the_streams_h264_profile_or_a_stated_label(offered, answered, labelled):
    from sfu.aiortc_hooks import h264_profiles_register
    from sfu.session import _answer_codec

    h264_profiles_register()
    stream = Stream("room", MediaConfig())
    stream.write(AccessUnit("video", "h264", 0, 0, avc.decoder_config_build([SPS_HIGH], [PPS_HIGH]), config=True))
    out = StreamOut(stream).track("video")
    assert out.codec.parameters["profile-level-id"] == "64001e"  # from the SPS
    media = offer_parse(h264_offer(*offered), sending=False).media[0]
    codec, label = _answer_codec(out, media)
    assert codec.parameters["profile-level-id"] == answered
    assert bool(label) == labelled and (not label or "64001e" in label)


def test_a_viewer_that_cannot_take_the_stream_gets_a_clear_refusal():
    from sfu.session import _answer_codec

    stream = Stream("room", MediaConfig())
    stream.declare("video", "h264")
    out = StreamOut(stream).track("video")
    vp8_only = h264_offer("42e01f").replace("H264/90000", "VP8/90000")
    with pytest.raises(SfuError) as refused:
        _answer_codec(out, offer_parse(vp8_only, sending=False).media[0])
    assert refused.value.status == 400 and "H264" in refused.value.message
    hevc = Stream("hevc-room", MediaConfig())
    hevc.declare("video", "hevc")
    assert StreamOut(hevc).track("video") is None and StreamOut(hevc).missing() == {"video": "hevc"}


def test_video_starts_at_the_first_packet_that_starts_a_frame():
    """A publisher's first frame is its keyframe: forwarding starts there, not at the next marker."""
    out = []
    buffer = ForwardJitterBuffer(lambda *a: out.append(a), is_video=True, clock=lambda: 0.0, codec="VP8")
    first = RtpPacket(payload_type=96, sequence_number=7, timestamp=0, marker=0, ssrc=1, payload=b"\x10\x00")
    first._data = b"key-"
    last = RtpPacket(payload_type=96, sequence_number=8, timestamp=0, marker=1, ssrc=1, payload=b"\x00\x00")
    last._data = b"frame"
    buffer.add(first)
    buffer.add(last)
    assert [d for d, *_ in out] == [b"key-frame"]
    # H.264: only an SPS or access unit delimiter first says so (tests/sfu/test_jitter_faults.py), not a slice
    assert aiortc_hooks.frame_starts("h264", b"\x7c\x87") and not aiortc_hooks.frame_starts("h264", b"\x7c\x85")
    assert aiortc_hooks.frame_starts("h264", b"\x67\x64") and not aiortc_hooks.frame_starts("h264", b"\x65\x88")
    assert not aiortc_hooks.frame_starts("vp8", b"\x00\x00") and not aiortc_hooks.frame_starts("opus", b"\x10\x00")


async def test_later_sender_reports_within_their_jitter_leave_the_timeline_even():
    """aiortc stamps a report when it sends a frame, after encoding it: reports 0-30 ms off the
    true mapping must not make pictures jump; a real step is slewed in, never jumped."""
    source = WebRtcSource(lambda: None)
    video = source.track("video", "VP8", 90000)
    stream = Stream("room", MediaConfig())
    source.attach(stream)
    ntp = lambda t: int((t + 2208988800) * (1 << 32))  # noqa: E731
    video.sender_report(ntp(1000.0), 0)
    dts = []
    for frame in range(300):  # 10 s at 30 fps, a report every second stamped up to 30 ms late
        rtp = frame * 3000
        if frame and frame % 30 == 0:
            video.sender_report(ntp(1000.0 + frame / 30 + (frame % 90) / 3000), rtp)
        dts.append(video.clock.dts(rtp))
    assert {b - a for a, b in zip(dts[:-1], dts[1:], strict=True)} == {3000}  # every picture 1/30 s after the last
    video.sender_report(ntp(1010.0 + 0.2), 300 * 3000)  # the sender's clock stepped 200 ms
    steps = [video.clock.dts(rtp) for rtp in range(300 * 3000, 400 * 3000, 3000)]
    spacing = [b - a for a, b in zip(steps[:-1], steps[1:], strict=True)]
    assert min(spacing) >= 3000 * 0.9 and max(spacing) <= 3000 * 1.1  # slewed, never a jump
    assert steps[-1] - dts[-1] == 100 * 3000 + round(0.2 * 90000)  # and followed in the end
