"""Merged reads: the low-water mark follows the stream's rate, and the kernel holds a socket's
wakeup until that much is queued, or the peer closes, or the mark drops."""
from __future__ import annotations

import asyncio
import select
import socket

import pytest

from media import runtime
from media.config import MediaConfig
from media.merged_read import MAX_LOWAT, MergedRead
from media.runtime import start_media_plane
from tests.media.conftest import av_stream
from tests.media.fakes import FakeControl, RtmpTestClient
from tests.test_rtmp_server import send_av


@pytest.fixture
def pair():
    listener = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(listener.getsockname())
    receiver, _ = listener.accept()
    listener.close()
    yield sender, receiver
    sender.close()
    receiver.close()


def readable(sock: socket.socket, wait: float = 0.2) -> bool:
    return bool(select.select([sock], [], [], wait)[0])


def lowat(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)


def ticked(merged: MergedRead, *windows: int, seconds: float = 1.0) -> list[int]:
    """The mark after each window (of `seconds`) in which the connection read that many bytes."""
    marks = []
    for nbytes in windows:
        merged.bytes = nbytes
        merged.tick(merged._since + seconds)
        marks.append(merged.lowat)
    return marks


def test_the_mark_is_merge_ms_of_the_lower_of_the_last_two_seconds(pair):
    _, receiver = pair
    merged = MergedRead(receiver, 40, 0.0)
    # 325 KB/s (2.6 Mbit/s) -> 13 KB; a keyframe's second (500 KB) does not raise it; a quiet
    # second lowers it at once; more than MAX_LOWAT's rate is capped.
    assert ticked(merged, 325_000, 325_000, 500_000, 325_000, 20_000, 10**8, 10**8) == [
        1, 13_000, 13_000, 13_000, 800, 800, MAX_LOWAT]
    assert lowat(receiver) == MAX_LOWAT
    merged.close()
    assert lowat(receiver) == 1


def test_the_rate_is_over_the_time_since_the_last_tick(pair):
    """The stats tick that drives the windows may run late (a busy loop): bytes per second, not per tick."""
    _, receiver = pair
    merged = MergedRead(receiver, 40, 0.0)
    assert ticked(merged, 650_000, 650_000, seconds=2.0) == [1, 13_000]
    merged.tick(merged._since)  # no time passed: nothing measured
    assert merged.lowat == 13_000
    merged.close()


def test_the_kernel_holds_the_wakeup_until_the_mark_is_queued_or_the_peer_closes(pair):
    sender, receiver = pair
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1000)
    sender.sendall(b"x" * 999)
    assert not readable(receiver, 0.05)
    sender.sendall(b"x")
    assert readable(receiver)
    assert len(receiver.recv(4096)) == 1000
    sender.sendall(b"x" * 10)
    assert not readable(receiver, 0.05)
    sender.shutdown(socket.SHUT_WR)  # a publisher that closes: its last bytes are read at once
    assert readable(receiver) and receiver.recv(4096) == b"x" * 10


def test_a_stream_that_goes_quiet_is_read_within_a_window(pair):
    sender, receiver = pair
    merged = MergedRead(receiver, 40, 0.0)
    try:
        ticked(merged, 325_000, 325_000)
        sender.sendall(b"a command")  # below the 13 KB mark: held
        assert not readable(receiver, 0.05)
        ticked(merged, 0)  # a second without a read: the mark drops and the reader wakes
        assert merged.lowat == 1 and readable(receiver)
    finally:
        merged.close()


def test_merged_reads_off_or_without_a_socket_set_nothing(pair):
    _, receiver = pair
    for merged in (MergedRead(receiver, 0, 0.0), MergedRead(None, 40, 0.0)):
        ticked(merged, 325_000, 325_000)
        assert merged.lowat == 1
        merged.close()
    assert lowat(receiver) == 1


async def test_a_publisher_that_stops_media_gets_its_command_answered(monkeypatch):
    """Over the RTMP server: media for several windows raises the mark above a command's size; then
    deleteStream and a createStream waiting for its _result on the same connection get answered."""
    monkeypatch.setattr(runtime, "STATS_EVERY", 0.2)  # the tick that ends each window
    control = FakeControl()
    plane = await start_media_plane(MediaConfig(bind="127.0.0.1", rtmp_port=0, http_port=0), control.plane())
    try:
        pub = await RtmpTestClient.connect(plane.rtmp_port)
        await pub.publish("k1")
        [conn] = [c for c in plane.rtmp.connections if c.publishing]
        units = av_stream(0, 1.5)
        send_av(pub, units[:10])
        for start in range(10, len(units), 10):
            send_av(pub, units[start:start + 10], head=False)
            await asyncio.sleep(0.05)
        assert conn._merged is not None and conn._merged.lowat > 200
        pub.send(pub.conn.delete_stream(pub.stream_id))
        assert await asyncio.wait_for(pub.create_stream(), 3) > 0
        assert conn._merged is None and not conn.publishing
        pub.close()
    finally:
        await plane.stop()


def test_bytes_held_under_the_mark_are_dated_to_the_read_before(pair):
    """A frozen publisher's last bytes wait under the mark until a tick drops it; they arrived
    after the read before, not at the tick (its silence counts from them, for a takeover)."""
    sender, receiver = pair
    merged = MergedRead(receiver, 40, 0.0)
    try:
        ticked(merged, 325_000, 325_000)
        assert merged.read(13_000, 2.5) is None  # read as it came
        sender.sendall(b"x" * 500)  # the tail: under the 13 KB mark
        assert not readable(receiver, 0.05)
        ticked(merged, 0)  # at 3.0: nothing read in a second
        assert readable(receiver)
        assert merged.read(len(receiver.recv(4096)), 3.0) == 2.5
        assert merged.read(100, 3.1) is None
    finally:
        merged.close()


def test_a_mark_dropped_over_an_empty_queue_dates_nothing(pair):
    sender, receiver = pair
    merged = MergedRead(receiver, 40, 0.0)
    try:
        ticked(merged, 325_000, 325_000, 0)  # quiet, nothing queued
        sender.sendall(b"fresh")
        assert readable(receiver)
        assert merged.read(len(receiver.recv(4096)), 3.5) is None
    finally:
        merged.close()
