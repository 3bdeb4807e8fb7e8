"""Fuzz: hub units <-> RTP, through the SFU's real path with hypothesis-built units and packets.

Out (sfu/from_hub.py): `TrackOut.frame` packetizes a unit once for every WebRTC viewer (aiortc's H.264,
VP8 and Opus packetizers: single NAL unit, STAP-A, FU-A). In: aiortc's receiver parses each packet and
depayloads it (`aiortc.codecs.depayload`; its ValueError drops the packet, as `_handle_rtp_packet` does),
`ForwardJitterBuffer` (sfu/aiortc_hooks.py) reassembles frames and `TrackToHub.on_frame` (sfu/to_hub.py)
makes hub units. Checked here:

- any unit packetizes or is dropped, never raises; any frame into the hub never raises;
- unit -> RTP -> unit gives the same bytes for H.264 (NAL units small and large), VP8 and Opus, also through
  a network that loses, duplicates, swaps and delays packets, paced so that lost ones are given up on: then
  only whole frames come out, after a gap the next one is a keyframe, and a keyframe sent after the losses
  comes out;
- hypothesis-built packets (random payloads, FU-A/STAP-A headers that lie, missing fragments, reordered and
  duplicated sequence numbers, random markers) never raise past the depayloader's ValueError, the jitter
  buffer keeps only packets of its window, frees a broken run once the stream goes on, and each frame it
  emits is one run of consecutive packets of one timestamp, from where a frame is known to start to its
  marker (or the packet before the next timestamp);
- everywhere: no packet is missing behind a newer one in the jitter buffer for longer than LOST_FRAME_TIMEOUT
  (then its frame is given up on), so a loss never stalls a track longer.

H.264 access units are built as encoders write them (tests/sfu/test_jitter_faults.py has the faults these
properties found, one test each): an access unit delimiter only first, SPS and PPS before each IDR picture.
"""

from __future__ import annotations

import random
import re
import time

import pytest
from aiortc.codecs import depayload
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from media.codecs import avc, vp8
from media.config import MediaConfig
from media.hub.stream import Entry, Stream
from media.hub.unit import AUDIO, VIDEO, AccessUnit
from sfu.aiortc_hooks import LOST_FRAME_TIMEOUT, ForwardJitterBuffer, frame_starts
from sfu.from_hub import StreamOut
from sfu.to_hub import WebRtcSource
from tests.codecs.bits import escape

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
CODECS = {"h264": H264, "vp8": VP8, "opus": OPUS}
SPS_HIGH = bytes.fromhex("6764001eacb405017fcb08000003000800000301e078b175")
PPS_HIGH = bytes.fromhex("68ef0fcb")
PACKET_MAX = 1300  # aiortc's payload size limit
VP8_KEY = b"\x10\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01"  # a 640x480 key frame's header


class Sink:
    viewer_count = 0

    def __init__(self) -> None:
        self.units: list[AccessUnit] = []

    def on_entry(self, entry: Entry) -> None:
        self.units.append(entry.unit)

    def stream_ended(self, reason: str) -> None:
        pass


class Sender:
    """A hub stream's WebRTC side: units to the RTP packets a viewer gets (`RtpOutput.send`'s headers)."""

    def __init__(self, codec: str, seq: int = 0, ts_origin: int = 0) -> None:
        self.kind = AUDIO if codec == "opus" else VIDEO
        self.codec = CODECS[codec]
        stream = Stream("fuzz-out", MediaConfig())
        stream.declare(self.kind, codec)
        out = StreamOut(stream).track(self.kind)
        assert out is not None
        self.out = out
        self.seq, self.ts_origin = seq, ts_origin

    def packets(self, unit: AccessUnit) -> list[RtpPacket]:
        frame = self.out.frame(Entry(unit, unit.ms, None, unit.keyframe))
        assert frame is not None
        packets = []
        for index, payload in enumerate(frame.payloads):
            packets.append(
                RtpPacket(
                    payload_type=self.codec.payloadType,
                    marker=int(index == len(frame.payloads) - 1),
                    sequence_number=self.seq,
                    timestamp=(self.ts_origin + frame.timestamp) & 0xFFFFFFFF,
                    ssrc=1234,
                    payload=payload,
                )
            )
            self.seq = uint16_add(self.seq, 1)
        return packets


class HoleClock:
    """Since when each packet missing behind a newer one in a jitter buffer's window has been missing."""

    def __init__(self) -> None:
        self.since: dict[int, float] = {}

    def check(self, buffer: ForwardJitterBuffer, now: float) -> None:
        if buffer._origin is None:  # nothing taken yet
            return
        slots = [buffer._packets[(buffer._origin + i) % buffer.capacity] for i in range(buffer.capacity)]
        held = [i for i, packet in enumerate(slots) if packet is not None]
        missing = {uint16_add(buffer._origin, i) for i in range(held[-1]) if slots[i] is None} if held else set()
        self.since = {seq: self.since.get(seq, now) for seq in missing}
        stalled = {seq: now - t for seq, t in self.since.items() if now - t > LOST_FRAME_TIMEOUT}
        assert not stalled, f"missing for longer than LOST_FRAME_TIMEOUT: {stalled}"


class Receiver:
    """A publisher's track as the SFU receives it: aiortc's parse and depayload, the jitter buffer, the hub."""

    def __init__(self, codec: str) -> None:
        self.kind = AUDIO if codec == "opus" else VIDEO
        self.codec = CODECS[codec]
        self.stream = Stream("fuzz-in", MediaConfig(source_keyframe_every=0))
        self.sink = Sink()
        self.stream.add_sink(self.sink)
        self.keyframe_requests = 0
        self.source = WebRtcSource(self._request_keyframe)
        self.source.clock.wall = lambda: 1000.0
        self.track = self.source.track(self.kind, self.codec.name, self.codec.clockRate)
        self.source.attach(self.stream)
        self.now = 0.0
        self.frames: list[tuple[bytes, int, bool]] = []  # what the jitter buffer emitted
        self.buffer = ForwardJitterBuffer(
            self._on_frame, is_video=self.kind == VIDEO, clock=lambda: self.now, codec=self.codec.name
        )
        self.holes = HoleClock()

    def _request_keyframe(self) -> None:
        self.keyframe_requests += 1

    def _on_frame(self, data: bytes, timestamp: int, arrived: float, after_loss: bool) -> None:
        self.frames.append((data, timestamp, after_loss))
        self.track.on_frame(data, timestamp, arrived, after_loss)

    def receive(self, packet: RtpPacket, dt: float = 0.0, check: bool = True) -> None:
        self.now += dt
        packet = RtpPacket.parse(packet.serialize())  # what the DTLS transport parses off the wire
        try:  # RTCRtpReceiver._handle_rtp_packet: a payload the depayloader refuses is dropped
            packet._data = depayload(self.codec, packet.payload) if packet.payload else b""  # type: ignore[attr-defined]
        except ValueError:
            return
        self.buffer.add(packet)
        if check:
            check_window(self.buffer)
            if self.kind == VIDEO:
                self.holes.check(self.buffer, self.now)

    @property
    def media(self) -> list[AccessUnit]:
        return [u for u in self.sink.units if not u.config]


def check_window(buffer: ForwardJitterBuffer) -> None:
    """Every packet held is in its own slot of the window from the origin: nothing stale stays behind."""
    for slot, packet in enumerate(buffer._packets):
        if packet is not None:
            assert packet.sequence_number % buffer.capacity == slot
            assert uint16_add(packet.sequence_number, -buffer._origin) < buffer.capacity


def check_hub_units(units: list[AccessUnit], codec: str) -> None:
    """Units as readers expect them: H.264 in 4-byte AVCC with its keyframes' IDR, configurations that parse."""
    media = [u for u in units if not u.config]
    if codec != "opus":
        assert not media or media[0].keyframe  # video starts at a keyframe
    for unit in units:
        if codec == "h264" and unit.config:
            config = avc.decoder_config_parse(unit.payload)
            assert config.length_size == 4 and all(avc.sps_parse(s) for s in config.sps)
        elif codec == "h264":
            nals = avc.split_avcc(unit.payload)
            assert nals and unit.keyframe == avc.has_idr(nals)
        elif codec == "vp8":
            assert unit.keyframe == vp8.is_keyframe(unit.payload)


# --- unit -> RTP: any unit packetizes or is dropped -------------------------------------------------------------


def random_bytes(low: int, high: int) -> st.SearchStrategy[bytes]:
    """Sizes up to several RTP packets without hypothesis drawing every byte."""
    return st.builds(
        lambda seed, size: random.Random(seed).randbytes(size), st.integers(0, 1 << 32), st.integers(low, high)
    )


arbitrary_nals = st.one_of(
    st.binary(min_size=1, max_size=40),
    random_bytes(1, 4000),
    st.sampled_from([b"\x00\x00\x01", b"\x65\x00\x00\x01", b"\x00", b"\x65\x00\x00\x00\x01\x41"]),
)


@FUZZ
@given(st.lists(arbitrary_nals, max_size=6), st.booleans(), st.one_of(st.none(), st.lists(arbitrary_nals, max_size=3)))
@example([b"\x00\x00\x01"], True, None)  # was IndexError in aiortc's packetizer (an empty NAL unit)
@example([b"\x65\x88\x00\x00\x01\x00\x00\x01\x41"], True, None)  # the same, two start codes in one NAL unit
@example([b"\x65\x88"], True, [b"\x67\x00\x00\x01", b"\x68"])  # the same from a configuration's SPS
def test_any_h264_unit_packetizes_or_is_dropped(nals: list[bytes], keyframe: bool, config: list[bytes] | None) -> None:
    sender = Sender("h264")
    if config is not None:
        record = b"\x01\x64\x00\x1f\xff\xe1" + b"".join(len(n).to_bytes(2, "big") + n for n in config[:1])
        record += bytes([len(config[1:])]) + b"".join(len(n).to_bytes(2, "big") + n for n in config[1:])
        sender.out.on_entry(Entry(AccessUnit(VIDEO, "h264", 0, 0, record, config=True), 0, None, False))
    for payload in (avc.nals_to_avcc(nals), avc.nals_to_avcc(nals)[:-1]):
        frame = sender.out.frame(Entry(AccessUnit(VIDEO, "h264", 0, 0, payload, keyframe=keyframe), 0, None, True))
        if frame is not None:  # NAL units of any type and size (valid ones round-trip below)
            assert all(0 < len(p) <= PACKET_MAX for p in frame.payloads)


@FUZZ
@given(
    st.sampled_from(["vp8", "opus"]),
    st.one_of(st.binary(max_size=40), random_bytes(0, 5000)),
    st.integers(-(1 << 40), 1 << 40),
)
def test_any_vp8_or_opus_unit_packetizes(codec: str, payload: bytes, dts: int) -> None:
    sender = Sender(codec)
    frame = sender.out.frame(Entry(AccessUnit(sender.kind, codec, dts, dts, payload, keyframe=True), 0, None, True))
    assert frame is not None
    if codec == "vp8":
        assert all(0 < len(p) <= PACKET_MAX for p in frame.payloads)
        assert b"".join(depayload(VP8, p) for p in frame.payloads) == payload
    else:
        assert frame.payloads == [payload]


# --- frames into the hub ----------------------------------------------------------------------------------------

BIG_SPS = SPS_HIGH + b"\x80" * 70_000


@FUZZ
@given(
    st.sampled_from(["h264", "vp8", "opus"]),
    st.lists(
        st.tuples(
            st.one_of(
                st.binary(max_size=60),
                st.lists(arbitrary_nals, max_size=4).map(avc.nals_to_annexb),
                st.just(avc.nals_to_annexb([SPS_HIGH, PPS_HIGH, b"\x65\x88\x80"])),
            ),
            st.integers(0, 1 << 33),
            st.booleans(),
        ),
        max_size=8,
    ),
)
@example("h264", [(avc.nals_to_annexb([BIG_SPS, PPS_HIGH, b"\x65\x88\x80"]), 0, False)])  # was MalformedData raised
@example("h264", [(avc.nals_to_annexb([SPS_HIGH, PPS_HIGH + b"\x80" * 70_000, b"\x65\x88\x80"]), 0, False)])
def test_any_frame_into_the_hub(codec: str, frames: list[tuple[bytes, int, bool]]) -> None:
    receiver = Receiver(codec)
    for data, timestamp, after_loss in frames:
        receiver.track.on_frame(data, timestamp, 0.0, after_loss)
    check_hub_units(receiver.sink.units, codec)


def test_megabyte_units_and_frames_are_fast() -> None:
    mb = random.Random(20261203).randbytes(1 << 20)
    huge, big = b"\x65" + escape(mb + b"\x80"), b"\x65" + escape(mb[:400_000] + b"\x80")
    start = time.monotonic()
    for codec, payload in (
        ("h264", avc.nals_to_avcc([huge])),
        ("h264", avc.nals_to_avcc([b"\x41\x9a"] * (1 << 18))),  # aggregated 9 to a STAP-A
        ("h264", avc.nals_to_avcc([b"\x65" + mb])),
        ("vp8", mb),
        ("opus", mb),
    ):
        sender = Sender(codec)
        sender.out.frame(Entry(AccessUnit(sender.kind, codec, 0, 0, payload, keyframe=True), 0, None, True))
    receiver = Receiver("h264")
    for data in (avc.nals_to_annexb([SPS_HIGH, PPS_HIGH, huge]), mb, b"\x00\x00\x01" * (1 << 18), b"\x00" * (1 << 20)):
        receiver.track.on_frame(data, 0, 0.0, False)
    unit = AccessUnit(VIDEO, "h264", 0, 0, avc.nals_to_avcc([SPS_HIGH, PPS_HIGH, big]), keyframe=True)
    (packets,) = send("h264", [unit], (0, 0))
    assert 300 < len(packets) < ForwardJitterBuffer(print, is_video=True).capacity  # a frame of most of the window
    for packet in packets:
        receiver.receive(packet, check=False)
    assert time.monotonic() - start < 5.0
    assert receiver.media[-1].payload == unit.payload


# --- unit -> RTP -> unit ----------------------------------------------------------------------------------------


def valid_nal(types: st.SearchStrategy[int], body: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A NAL unit as an encoder writes it: escaped, ending in its stop bit, at least 2 bytes."""
    return st.builds(lambda t, nri, b: bytes([nri << 5 | t]) + escape(b + b"\x80"), types, st.integers(0, 3), body)


nal_types = st.sampled_from([1, 1, 1, 5, 5, 6, 2, 3, 4, 12, 19, 20, 23])  # no AUD (9), SPS (7), PPS (8): placed
h264_nals = st.one_of(valid_nal(nal_types, st.binary(max_size=80)), valid_nal(nal_types, random_bytes(1200, 5000)))
AUD = b"\x09\xf0"


@st.composite
def h264_units(draw: st.DrawFn) -> list[AccessUnit]:
    """Frames of NAL units small (STAP-A, single) and large (FU-A) at increasing times; the first one an IDR.
    As a WebRTC encoder writes them: SPS and PPS before an IDR picture, an access unit delimiter only first."""
    units, pts = [], draw(st.integers(0, 1 << 33))
    for index in range(draw(st.integers(1, 8))):
        nals = draw(st.lists(h264_nals, min_size=1, max_size=6))
        if index == 0 and not avc.has_idr(nals):
            nals.append(draw(valid_nal(st.just(5), st.binary(max_size=30))))
        if avc.has_idr(nals):
            nals = [SPS_HIGH, PPS_HIGH, *nals]
        if draw(st.booleans()):
            nals = [AUD, *nals]
        pts += draw(st.integers(1, 9000))
        units.append(AccessUnit(VIDEO, "h264", pts, pts, avc.nals_to_avcc(nals), keyframe=avc.has_idr(nals)))
    return units


@st.composite
def vp8_units(draw: st.DrawFn) -> list[AccessUnit]:
    units, pts = [], draw(st.integers(0, 1 << 33))
    for index in range(draw(st.integers(1, 8))):
        body = draw(st.one_of(st.binary(min_size=4, max_size=60), random_bytes(1300, 5000)))
        if index == 0 or draw(st.booleans()):
            frame = VP8_KEY + body
        else:
            frame = bytes([body[0] | 1]) + body[1:]
        pts += draw(st.integers(1, 9000))
        units.append(AccessUnit(VIDEO, "vp8", pts, pts, frame, keyframe=vp8.is_keyframe(frame)))
    return units


@st.composite
def opus_units(draw: st.DrawFn) -> list[AccessUnit]:
    units, dts = [], draw(st.integers(0, 1 << 30)) * 1800
    for _ in range(draw(st.integers(1, 12))):
        dts += draw(st.integers(1, 3)) * 1800  # 20 ms frames, some missing (DTX)
        units.append(AccessUnit(AUDIO, "opus", dts, dts, draw(st.binary(min_size=1, max_size=200)), keyframe=True))
    return units


stream_units = st.one_of(
    st.tuples(st.just("h264"), h264_units()),
    st.tuples(st.just("vp8"), vp8_units()),
    st.tuples(st.just("opus"), opus_units()),
)
start = st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF))  # first sequence number, RTP time origin


def send(codec: str, units: list[AccessUnit], at: tuple[int, int]) -> list[list[RtpPacket]]:
    sender = Sender(codec, *at)
    return [sender.packets(unit) for unit in units]


def check_units_are_sent_frames(receiver: Receiver, units: list[AccessUnit], ts_origin: int) -> list[int]:
    """Each unit out is one unit sent, whole, in order; returns their indices."""
    got = receiver.media
    if not got:
        return []
    clock = receiver.codec.clockRate
    sent = [(ts_origin + u.pts * clock // 90_000) & 0xFFFFFFFF for u in units]  # their RTP timestamps
    anchor = receiver.track.clock.anchor
    assert anchor is not None  # hub time 0: the RTP time of the first frame the track took
    indices = []
    for unit in got:
        index = sent.index((anchor[1] + unit.dts * clock // 90_000) & 0xFFFFFFFF)
        assert unit.payload == units[index].payload and unit.keyframe == units[index].keyframe
        indices.append(index)
    assert indices == sorted(set(indices))
    return indices


def without_parameter_sets(unit: AccessUnit) -> AccessUnit:
    nals = [n for n in avc.split_avcc(unit.payload) if avc.nal_type(n) not in (avc.NAL_SPS, avc.NAL_PPS)]
    return AccessUnit(VIDEO, "h264", unit.pts, unit.dts, avc.nals_to_avcc(nals), keyframe=unit.keyframe)


@FUZZ
@given(stream_units, start, st.booleans())
def test_units_round_trip_through_rtp(
    codec_units: tuple[str, list[AccessUnit]], at: tuple[int, int], configured: bool
) -> None:
    codec, units = codec_units
    receiver = Receiver(codec)
    sender = Sender(codec, *at)
    record = avc.decoder_config_build([SPS_HIGH], [PPS_HIGH])
    if configured and codec == "h264":  # the SPS and PPS then go in-band before each IDR, and come back as a config
        sender.out.on_entry(Entry(AccessUnit(VIDEO, "h264", 0, 0, record, config=True), 0, None, False))
        units = [without_parameter_sets(u) for u in units]  # as an RTMP source's units come
    for unit in units:
        for packet in sender.packets(unit):
            receiver.receive(packet, 0.001)
    expected = [u.payload for u in units]
    if configured and codec == "h264":
        expected = [
            avc.nals_to_avcc([SPS_HIGH, PPS_HIGH]) + p if u.keyframe else p
            for u, p in zip(units, expected, strict=True)
        ]
        assert [u.payload for u in receiver.sink.units if u.config] == [record]
    got = receiver.media
    assert [u.payload for u in got] == expected
    assert [u.dts for u in got] == [(u.pts - units[0].pts) for u in units]
    assert [u.keyframe for u in got] == [u.keyframe for u in units]
    check_hub_units(receiver.sink.units, codec)
    assert not any(receiver.buffer._packets)


impairments = st.lists(
    st.tuples(
        st.sampled_from(["drop", "drop", "duplicate", "swap", "late"]), st.integers(0, 1 << 16), st.integers(1, 5)
    ),
    max_size=6,
)


def impair(packets: list[RtpPacket], ops: list[tuple[str, int, int]]) -> list[RtpPacket]:
    """Loss, duplicates, local reordering: what a network does between the browser and us."""
    out = list(packets)
    for op, pos, n in ops:
        if not out:
            break
        at = pos % len(out)
        if op == "drop":
            del out[at : at + n]
        elif op == "duplicate":
            out.insert(min(len(out), at + n), out[at])
        elif op == "swap" and at + 1 < len(out):
            out[at], out[at + 1] = out[at + 1], out[at]
        elif op == "late":
            out.insert(min(len(out), at + n), out.pop(at))
    return out


def whole_tail(codec: str, pts: int) -> list[AccessUnit]:
    """A keyframe and four deltas after `pts`: what the stream goes on with once the losses are over."""
    key, delta = {
        "h264": (avc.nals_to_avcc([SPS_HIGH, PPS_HIGH, b"\x65\x88\x80"]), avc.nals_to_avcc([b"\x41\x9a\x80"])),
        "vp8": (VP8_KEY + b"\x00\x01\x02\x03", b"\x01\x00\x00\x00"),
    }[codec]
    return [
        AccessUnit(VIDEO, codec, pts + 3000 * i, pts + 3000 * i, delta if i > 1 else key, keyframe=i == 1)
        for i in range(1, 6)
    ]


@FUZZ
# Packets 1 ms apart arrive within LOST_FRAME_TIMEOUT of each other; 20 and 100 ms apart, a packet lost (or late
# by a few) is given up on while its frame and the next ones still arrive.
@given(stream_units, start, impairments, st.sampled_from([0.001, 0.02, 0.1]))
def test_units_through_a_lossy_network(
    codec_units: tuple[str, list[AccessUnit]], at: tuple[int, int], ops: list[tuple[str, int, int]], dt: float
) -> None:
    codec, units = codec_units
    receiver = Receiver(codec)
    sender = Sender(codec, *at)
    packets = [p for unit in units for p in sender.packets(unit)]
    for packet in impair(packets, ops):
        receiver.receive(packet, dt)
    tail = [] if codec == "opus" else whole_tail(codec, units[-1].pts)
    for packet in (p for unit in tail for p in sender.packets(unit)):  # 0.4 s of it, whole, after the keyframe
        receiver.receive(packet, 0.1)
    check_hub_units(receiver.sink.units, codec)
    indices = check_units_are_sent_frames(receiver, units + tail, at[1])
    if codec != "opus":
        for before, after in zip(indices, indices[1:], strict=False):
            if after != before + 1:  # a frame never got out whole: the next one out is a keyframe
                assert (units + tail)[after].keyframe
        assert indices[-len(tail) :] == list(range(len(units), len(units) + len(tail)))  # no stall after the losses
        if not ops:
            assert indices == list(range(len(units) + len(tail)))


nri = st.integers(0, 3)
short_length = st.integers(-3, 3)


def _stap_a(header: int, parts: list[tuple[bytes, int]], cut: int) -> bytes:
    body = b"".join(max(0, min(0xFFFF, len(nal) + lie)).to_bytes(2, "big") + nal for nal, lie in parts)
    return bytes([header]) + body[: len(body) - cut]


h264_payloads = st.one_of(
    # single NAL unit packets (incl. a forbidden bit, and 1-byte ones the depayloader refuses)
    st.builds(
        lambda f, n, t, body: bytes([f << 7 | n << 5 | t]) + body,
        st.integers(0, 1),
        nri,
        st.integers(1, 23),
        st.binary(max_size=40),
    ),
    # STAP-A whose lengths may lie and whose end may be cut
    st.builds(
        _stap_a,
        st.builds(lambda n: n << 5 | 24, nri),
        st.lists(st.tuples(st.binary(max_size=30), short_length | st.integers(-0xFFFF, 0xFFFF)), max_size=4),
        st.integers(0, 3),
    ),
    # FU-A with any start/end/reserved bits and type
    st.builds(
        lambda n, s, e, r, t, body: bytes([n << 5 | 28, s << 7 | e << 6 | r << 5 | t]) + body,
        nri,
        st.integers(0, 1),
        st.integers(0, 1),
        st.integers(0, 1),
        st.integers(0, 31),
        st.binary(max_size=40),
    ),
    # types aiortc does not take (STAP-B, MTAP, FU-B, reserved) and plain junk
    st.builds(lambda t, body: bytes([t]) + body, st.sampled_from([0, 25, 26, 27, 29, 30, 31]), st.binary(max_size=10)),
    st.binary(max_size=40),
    # whole valid NAL units, so some frames hold an SPS, a PPS or an IDR
    st.sampled_from([SPS_HIGH, PPS_HIGH, b"\x65\x88\x80", b"\x18\x00\x18" + SPS_HIGH + b"\x00\x04" + PPS_HIGH]),
)
vp8_payloads = st.one_of(
    st.builds(
        lambda d, frame: d + frame,
        st.sampled_from(
            [b"\x10", b"\x00", b"\x90\x80\x01\x02", b"\x90\xf0\x81", b"\x80", b"\x90\xff\xff\xff\xff", b"\x1f"]
        ),
        st.one_of(st.binary(max_size=30), st.just(VP8_KEY)),
    ),
    st.binary(max_size=30),
)
seq_steps = st.sampled_from([1, 1, 1, 1, 1, 1, 0, 2, 3, -1, -2, 50, -50, 99, -99, -100, -101, 511, 512, 513, 30000])
ts_steps = st.sampled_from([0, 0, 0, 0, 3000, 3000, 1, -3000, 1 << 31, (1 << 31) + 1])
gaps = st.sampled_from([0.0, 0.0, 0.01, 0.1, LOST_FRAME_TIMEOUT + 0.01, 2.0])


@st.composite
def rtp_runs(draw: st.DrawFn, payloads: st.SearchStrategy[bytes]) -> list[tuple[RtpPacket, float]]:
    seq, ts = draw(start)
    run = []
    for _ in range(draw(st.integers(1, 50))):
        seq, ts = uint16_add(seq, draw(seq_steps)), (ts + draw(ts_steps)) & 0xFFFFFFFF
        packet = RtpPacket(
            payload_type=96,
            marker=int(draw(st.booleans())),
            sequence_number=seq,
            timestamp=ts,
            ssrc=1234,
            payload=draw(payloads),
        )
        run.append((packet, draw(gaps)))
    return run


def clean_tail(run: list[tuple[RtpPacket, float]], count: int, seq: int | None = None) -> list[RtpPacket]:
    """One-packet frames right after the run (from ``seq`` if given), each a marker packet."""
    last = run[-1][0]
    seq = uint16_add(last.sequence_number, 1) if seq is None else seq
    return [
        RtpPacket(
            payload_type=96,
            marker=1,
            sequence_number=uint16_add(seq, i),
            timestamp=(last.timestamp + 3000 * (1 + i)) & 0xFFFFFFFF,
            ssrc=1234,
        )
        for i in range(count)
    ]


@FUZZ
@given(
    st.one_of(
        st.tuples(st.just("h264"), rtp_runs(h264_payloads)),
        st.tuples(st.just("vp8"), rtp_runs(vp8_payloads)),
        st.tuples(st.just("opus"), rtp_runs(st.binary(max_size=30))),
    )
)
def test_built_packets_into_the_hub(codec_run: tuple[str, list[tuple[RtpPacket, float]]]) -> None:
    codec, run = codec_run
    receiver = Receiver(codec)
    for packet, dt in run:
        receiver.receive(packet, dt)
    check_hub_units(receiver.sink.units, codec)
    for data, _, _ in receiver.frames:
        assert len(data) <= receiver.buffer.capacity * 300  # at most one window of packets (each under 150 bytes)
    # The stream goes on with whole frames: what was broken is freed, and those frames come out.
    payload, unit = {
        "h264": (b"\x65\x88\x80", avc.nals_to_avcc([b"\x65\x88\x80"])),
        "vp8": (b"\x10" + VP8_KEY, VP8_KEY),
        "opus": (b"\x01", b"\x01"),
    }[codec]
    # Audio drops a packet older than the newest one taken, and has no reset: its stream goes on from there.
    for packet in clean_tail(run, receiver.buffer.capacity + 20, receiver.buffer._origin if codec == "opus" else None):
        packet.payload = payload
        receiver.receive(packet, 1.0, check=False)
    check_window(receiver.buffer)
    assert [u.payload for u in receiver.media[-20:]] == [unit] * 20
    assert not any(receiver.buffer._packets) or codec == "opus"
    check_hub_units(receiver.sink.units, codec)


START_OR_NOT = [b"\x10\x00", b"\x00\x00", b"\x67\x64", b"\x78\x00\x18\x67", b"\x65\x88", b"\x7c\x85", b"\x7c\x87"]


@FUZZ
@given(rtp_runs(st.sampled_from(START_OR_NOT)), st.sampled_from(["H264", "VP8", None]))
@example(
    [
        (RtpPacket(sequence_number=1, timestamp=0, marker=1, payload=b"\x65\x88"), 0.0),
        (RtpPacket(sequence_number=3, timestamp=1, payload=b"\x65\x88"), 0.0),
        (RtpPacket(sequence_number=2, timestamp=1, payload=b"\x65\x88"), 1.0),
        (RtpPacket(sequence_number=3, timestamp=1, marker=1, payload=b"\x65\x88"), 1.0),
    ],
    None,
)  # a duplicate that is not the same packet: the last one counts
def test_jitter_buffer_frames_are_runs_of_one_timestamp(run: list[tuple[RtpPacket, float]], codec: str | None) -> None:
    """Each packet carries its own index as its data: every frame must be consecutive packets of one timestamp,
    from a packet that starts a frame (`frame_starts`, or one after a marker or a timestamp change; a duplicate
    that is not the same packet may have said so) to the first marker (or the packet before a timestamp change);
    no packet comes out twice; a frame not flagged after a loss follows the previous one without a gap; no packet
    is missing behind a newer one for longer than LOST_FRAME_TIMEOUT; a broken run is freed once the stream goes on."""
    now = [0.0]
    frames: list[tuple[list[RtpPacket], int, bool]] = []
    sent: list[RtpPacket] = []
    received: dict[int, list[RtpPacket]] = {}  # by sequence number

    def boundary(before: int, timestamp: int) -> bool:  # a packet received at `before` ends a frame before one of ts
        return any(p.marker or p.timestamp != timestamp for p in received.get(before, []))

    def sink(data: bytes, timestamp: int, arrived: float, after_loss: bool) -> None:
        packets = [sent[int(i)] for i in re.findall(rb"<(\d+)>", data)]
        first, last = packets[0], packets[-1]
        starts = (frame_starts((codec or "").lower(), p.payload) for p in received[first.sequence_number])
        assert any(starts) or boundary(uint16_add(first.sequence_number, -1), first.timestamp)
        assert last.marker or any(
            p.timestamp != last.timestamp for p in received.get(uint16_add(last.sequence_number, 1), [])
        )
        frames.append((packets, timestamp, after_loss))

    buffer = ForwardJitterBuffer(sink, is_video=True, clock=lambda: now[0], codec=codec)
    holes = HoleClock()
    for packet, dt in [*run, *((p, 1.0) for p in clean_tail(run, buffer.capacity + 20))]:
        packet = RtpPacket(
            payload_type=96,
            marker=packet.marker,
            sequence_number=packet.sequence_number,
            timestamp=packet.timestamp,
            ssrc=1,
            payload=packet.payload or (b"\x10\x00" if codec == "VP8" else b"\x65\x88"),
        )
        packet._data = b"<%d>" % len(sent)  # type: ignore[attr-defined]
        sent.append(packet)
        received.setdefault(packet.sequence_number, []).append(packet)
        now[0] += dt
        buffer.add(packet)
        if len(sent) <= len(run) + 20:
            check_window(buffer)
            holes.check(buffer, now[0])
    seen: set[int] = set()
    previous: RtpPacket | None = None
    for packets, timestamp, after_loss in frames:
        assert packets and not seen & {id(p) for p in packets}
        seen |= {id(p) for p in packets}
        assert all(p.timestamp == timestamp & 0xFFFFFFFF for p in packets)
        assert not any(p.marker for p in packets[:-1])
        assert all(
            uint16_add(a.sequence_number, 1) == b.sequence_number for a, b in zip(packets, packets[1:], strict=False)
        )
        if previous is not None and not after_loss:
            assert packets[0].sequence_number == uint16_add(previous.sequence_number, 1)
        previous = packets[-1]
    tail = sent[-20:]
    assert [packets for packets, _, _ in frames[-20:]] == [[p] for p in tail]
    assert not any(buffer._packets)


@pytest.mark.parametrize("codec", ["h264", "vp8", "opus", "", "H264"])
@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=20))
def test_frame_starts_and_depayload_never_raise_otherwise(codec: str, payload: bytes) -> None:
    assert frame_starts(codec, payload) in (True, False)
    for params in CODECS.values():
        try:
            depayload(params, payload)
        except ValueError:
            pass
    try:
        RtpPacket.parse(payload)
    except ValueError:
        pass
