"""ForwardJitterBuffer after losses (sfu/aiortc_hooks.py): the three faults the RTP fuzzing found (test_fuzz_rtp.py).

A frame is given up on LOST_FRAME_TIMEOUT after a packet of it went missing, whichever packet that is; nothing of
it reaches the hub afterwards; the stream resumes only where a frame is known to start, and the hub then waits
for a keyframe. Packets go through the fuzz tests' receiver (aiortc's parse and depayload, the buffer, the hub).
"""
from __future__ import annotations

import random

import pytest

from media.codecs import avc
from media.hub.unit import VIDEO, AccessUnit
from sfu.aiortc_hooks import LOST_FRAME_TIMEOUT, frame_starts
from tests.codecs.bits import escape
from tests.sfu.test_fuzz_rtp import PPS_HIGH, SPS_HIGH, VP8_KEY, Receiver, check_units_are_sent_frames, send

DELTA_H264 = b"\x41\x9a\x80"
WRAP = 0xFFFFF000  # the RTP time origin of `run`


def h264(nals_per_frame: list[list[bytes]]) -> list[AccessUnit]:
    return [AccessUnit(VIDEO, "h264", 3000 * i, 3000 * i, avc.nals_to_avcc(nals), keyframe=avc.has_idr(nals))
            for i, nals in enumerate(nals_per_frame)]


def vp8(keyframes: list[bool], size: int) -> list[AccessUnit]:
    body = random.Random(3).randbytes(size)
    return [AccessUnit(VIDEO, "vp8", 3000 * i, 3000 * i, VP8_KEY + body if key else b"\x01" + body, keyframe=key)
            for i, key in enumerate(keyframes)]


def idr(size: int, seed: int = 1) -> bytes:
    return b"\x65\xb8" + escape(random.Random(seed).randbytes(size) + b"\x80")


def run(codec: str, units: list[AccessUnit], lost: set[int], dt: float) -> tuple[Receiver, list[float]]:
    """Send `units` one packet every `dt` s minus the `lost` packets (indices in the whole stream); returns the
    receiver and when each frame left the jitter buffer."""
    receiver = Receiver(codec)
    out: list[float] = []
    sink = receiver.buffer.sink
    receiver.buffer.sink = lambda *frame: (out.append(receiver.now), sink(*frame))
    packets = [p for frame in send(codec, units, (65530, WRAP)) for p in frame]  # both wrap on the way
    for index, packet in enumerate(packets):
        if index not in lost:
            receiver.receive(packet, dt)
    return receiver, out


def whole(receiver: Receiver, units: list[AccessUnit], ts_origin: int = 0) -> list[int]:
    """Indices of the units the hub got, each checked to be a unit sent, whole."""
    return check_units_are_sent_frames(receiver, units, ts_origin)


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_a_lost_middle_fragment_gives_up_on_its_frame_after_the_timeout(codec: str) -> None:
    if codec == "h264":
        keyframe = [SPS_HIGH, PPS_HIGH, idr(4000)]  # STAP-A (SPS, PPS), then the IDR in 4 FU-A fragments
        units = h264([keyframe if i % 4 == 0 else [DELTA_H264] for i in range(9)])
    else:
        units = vp8([i % 4 == 0 for i in range(9)], 4000)  # 4 packets each
    counts = [len(frame) for frame in send(codec, units, (0, 0))]
    lost = sum(counts[:4]) + 2  # a middle packet of the second keyframe (unit 4)
    dt = 0.05
    receiver, out = run(codec, units, {lost}, dt)
    assert whole(receiver, units, WRAP) == [0, 1, 2, 3, 8]  # unit 4 lost, its deltas dropped, the next keyframe in
    assert receiver.keyframe_requests and not any(receiver.buffer._packets)
    assert [after_loss for *_, after_loss in receiver.frames] == [False] * 4 + [True] + [False] * 3
    # Given up one timeout after the hole showed (the packet past it came in), not when the window overflowed.
    hole_seen = dt * (lost + 1)
    assert hole_seen + LOST_FRAME_TIMEOUT < out[4] <= hole_seen + LOST_FRAME_TIMEOUT + dt + 1e-9


def test_a_fragment_resent_within_the_timeout_keeps_its_frame() -> None:
    units = h264([[SPS_HIGH, PPS_HIGH, idr(4000)], [DELTA_H264], [DELTA_H264]])
    packets = [p for frame in send("h264", units, (0, 0)) for p in frame]
    receiver = Receiver("h264")
    for packet in packets[:2] + packets[3:]:
        receiver.receive(packet, 0.02)
    receiver.receive(packets[2], LOST_FRAME_TIMEOUT - 0.1)  # the NACKed fragment, in time
    assert whole(receiver, units) == [0, 1, 2] and not receiver.keyframe_requests


@pytest.mark.parametrize("codec", ["h264", "vp8"])
@pytest.mark.parametrize("lost", ["first", "second"])
def test_giving_up_on_a_keyframe_still_arriving_lets_no_part_of_it_out(codec: str, lost: str) -> None:
    """A keyframe of many packets paced out over 0.6 s loses a packet early: it is given up on while it still
    arrives, and the rest of it (its later FU-A starts look like NAL unit starts) must not reach the hub."""
    if codec == "h264":
        big = [SPS_HIGH, PPS_HIGH, b"\x65\x88\x80", idr(12_000, 2), b"\x65\x8c\x80"]
        units = h264([[SPS_HIGH, PPS_HIGH, b"\x65\x88\x80"], [DELTA_H264], big, [DELTA_H264],
                      [SPS_HIGH, PPS_HIGH, b"\x65\x88\x80"], [DELTA_H264]])
    else:
        units = vp8([True, False, True, False, True, False], 12_000)
    counts = [len(frame) for frame in send(codec, units, (0, 0))]
    assert counts[2] >= 10
    start = sum(counts[:2])
    receiver, _ = run(codec, units, {start if lost == "first" else start + 1}, 0.05)
    assert whole(receiver, units, WRAP) == [0, 1, 4, 5]
    assert receiver.keyframe_requests and not any(receiver.buffer._packets)
    assert [after_loss for *_, after_loss in receiver.frames] == [False, False, True, False, False]


@pytest.mark.parametrize("order", ["lost", "swapped"])
def test_a_lost_first_packet_starts_the_stream_at_a_whole_frame(order: str) -> None:
    """The first keyframe's first packet (its STAP-A with SPS and PPS) is lost or comes second: its slices' FU-A
    and single NAL packets that follow look like NAL unit starts, but the stream starts at the next keyframe."""
    slice_a, slice_b = idr(2000, 4), b"\x65\x88\x80"  # one IDR picture in two slices
    units = h264([[SPS_HIGH, PPS_HIGH, slice_a, slice_b], [DELTA_H264], [SPS_HIGH, PPS_HIGH, idr(2000, 5)]]
                 + [[DELTA_H264]] * 6)
    packets = [p for frame in send("h264", units, (0, 0)) for p in frame]
    receiver = Receiver("h264")
    # Swapped, the FU-A start came before the stream was taken up: gone, its frame is given up on in time.
    for packet in packets[1:] if order == "lost" else [packets[1], packets[0], *packets[2:]]:
        receiver.receive(packet, 0.05)
    assert whole(receiver, units) == list(range(2, 9)) and receiver.keyframe_requests


def test_a_lost_first_packet_of_a_vp8_stream_starts_it_at_a_whole_frame() -> None:
    units = vp8([True, False, True, False], 3000)
    packets = [p for frame in send("vp8", units, (0, 0)) for p in frame]
    receiver = Receiver("vp8")
    for packet in packets[1:]:
        receiver.receive(packet, 0.01)
    assert whole(receiver, units) == [2, 3]


def test_h264_frame_starts_only_where_an_access_unit_must_start() -> None:
    stap_a = b"\x78\x00\x18" + SPS_HIGH
    for payload in (SPS_HIGH, b"\x09\xf0", stap_a, b"\x7c\x87" + SPS_HIGH[1:]):  # SPS, AUD, STAP-A, FU-A start
        assert frame_starts("h264", payload), payload
    for payload in (b"\x65\x88", b"\x41\x9a", b"\x7c\x85", b"\x7c\x07", b"\x68\xef", b"\x06\x05", b"\x78\x00"):
        assert not frame_starts("h264", payload), payload  # slices, a later fragment, PPS, SEI, a cut STAP-A
