"""Merged reads: let the kernel gather a publisher's bytes before the event loop wakes.

A 720p30 publisher sends about 73 messages a second (30 video frames, 43 AAC frames), each in its
own TCP segment, so the loop would wake 73 times a second, and most of the cost of ingest is the
Python that runs cold after each wakeup, not the parsing. SRS's `mr` (merged read) sleeps between
reads for the same reason. Here the socket's SO_RCVLOWAT does it without a sleep: epoll reports
the socket once `lowat` bytes are queued (or on FIN, or when the receive buffer fills up), and
once a second `lowat` is set to `merge_ms` of the stream's own byte rate (the lower of the last two
seconds', so a keyframe's burst does not raise it). A stream whose rate collapses (a publisher that
stops sending media but keeps its connection, to send a command) waits at most one second: with
no bytes read in a second the mark drops to 1 byte, and setting it wakes the reader.
"""
from __future__ import annotations

import asyncio
import socket

MAX_LOWAT = 64 << 10  # bytes: 35 ms of a 15 Mbit/s stream; the kernel grows the receive buffer to fit
WINDOW = 1.0  # s over which the rate is measured


class MergedRead:
    """One publisher socket's low-water mark, set once a second from the bytes read."""

    __slots__ = ("sock", "merge_s", "lowat", "bytes", "_last_rate", "_timer", "_loop")

    def __init__(self, sock: socket.socket | None, merge_ms: float, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self.merge_s = merge_ms / 1000
        self.lowat = 1
        self.bytes = 0  # read in this window: the connection adds to it
        self._last_rate = 0.0
        self._loop = loop
        self._timer: asyncio.TimerHandle | None = None
        if sock is not None and merge_ms > 0:
            self._timer = loop.call_later(WINDOW, self._tick)

    def _tick(self) -> None:
        rate, self.bytes = self.bytes / WINDOW, 0
        self._set(min(MAX_LOWAT, max(1, int(min(rate, self._last_rate) * self.merge_s))))
        self._last_rate = rate
        if self.sock is not None:
            self._timer = self._loop.call_later(WINDOW, self._tick)

    def _set(self, lowat: int) -> None:
        """Setting the mark wakes a reader whose queue already holds as much."""
        if self.sock is None or lowat == self.lowat:
            return
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, lowat)
        except OSError:  # closed under us: nothing left to merge
            self.sock = None
            return
        self.lowat = lowat

    def close(self) -> None:
        """Back to waking on every byte (the connection may go on with commands), timer off."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._set(1)
        self.sock = None
