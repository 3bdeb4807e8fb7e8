"""Merged reads: let the kernel gather a publisher's bytes before the event loop wakes.

A 720p30 publisher sends about 73 messages a second (30 video frames, 43 AAC frames), each in its
own TCP segment, so the loop would wake 73 times a second, and most of the cost of ingest is the
Python that runs cold after each wakeup, not the parsing. SRS's `mr` (merged read) sleeps between
reads for the same reason. Here the socket's SO_RCVLOWAT does it without a sleep: epoll reports
the socket once `lowat` bytes are queued (or on FIN, or when the receive buffer fills up), and
once a second `lowat` is set to `merge_ms` of the stream's own byte rate (the lower of the last two
seconds', so a keyframe's burst does not raise it). The media plane's stats tick drives that second
for every publisher, so a publisher adds no wakeup of its own. A stream whose rate collapses (a publisher that
stops sending media but keeps its connection, to send a command) waits at most one second: with
no bytes read in a second the mark drops to 1 byte, and setting it wakes the reader.

Bytes read at that wake sat under the mark since the read before (a publisher that sends less than
a mark's worth in a whole second has stopped): `read` dates them to that read, so a frozen
publisher's silence (media/hub/registry.py, takeover) counts from its last bytes, not from the tick.
"""
from __future__ import annotations

import fcntl
import socket
import struct
import termios

MAX_LOWAT = 64 << 10  # bytes: 35 ms of a 15 Mbit/s stream; the kernel grows the receive buffer to fit


class MergedRead:
    """One publisher socket's low-water mark, set on each `tick` from the bytes read since the last."""

    __slots__ = ("sock", "merge_s", "lowat", "bytes", "_last_rate", "_since", "_last_read", "_held")

    def __init__(self, sock: socket.socket | None, merge_ms: float, now: float) -> None:
        self.sock = sock if merge_ms > 0 else None
        self.merge_s = merge_ms / 1000
        self.lowat = 1
        self.bytes = 0  # read in this window: the connection adds to it
        self._last_rate = 0.0
        self._since = now
        self._last_read = now
        self._held = False  # the mark dropped with bytes queued under it

    def read(self, nbytes: int, now: float) -> float | None:
        """Count a read at `now`. For bytes the mark held until a tick dropped it, returns when
        they arrived (the read before, on the same clock); None for bytes read as they came."""
        self.bytes += nbytes
        arrived = self._last_read if self._held else None
        self._held = False
        self._last_read = now
        return arrived

    def tick(self, now: float) -> None:
        """End a window (about a second, `now` on the loop's clock): the mark follows its rate."""
        elapsed = now - self._since
        if self.sock is None or elapsed <= 0:
            return
        rate, self.bytes, self._since = self.bytes / elapsed, 0, now
        lowat = min(MAX_LOWAT, max(1, int(min(rate, self._last_rate) * self.merge_s)))
        if rate == 0 and self.lowat > 1:
            self._held = self._queued() > 0
        self._set(lowat)
        self._last_rate = rate

    def _queued(self) -> int:
        """Bytes waiting in the socket's receive queue."""
        try:
            return struct.unpack("i", fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:
            return 0

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
        """Back to waking on every byte (the connection may go on with commands)."""
        self._set(1)
        self.sock = None
