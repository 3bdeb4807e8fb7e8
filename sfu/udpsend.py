"""Send a burst of UDP datagrams to one address in as few system calls as Linux allows.

One `sendmsg` with UDP_SEGMENT (UDP GSO, Linux >= 4.18) carries a run of datagrams of the same
size (the run's last may be shorter): the kernel cuts it into datagrams. An RTP frame packetized
for one subscriber is such a run (every packet full but the last), so a frame costs one system call
per subscriber instead of one per packet. Where GSO is missing or refused, one `sendto` each.
"""
from __future__ import annotations

import socket
import struct
import sys

SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = 103
MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS is 64 (128 since 6.9)
MAX_BYTES = 65000  # one GSO send is one IP datagram before segmentation

_gso = {"on": sys.platform == "linux"}


def gso_enabled() -> bool:
    return _gso["on"]


def send_burst(sock: socket.socket, datagrams: list[bytes], addr: tuple) -> int:
    """Send `datagrams` in order; returns the system calls made. Raises BlockingIOError when
    the socket's buffer is full (the rest of the burst is not sent)."""
    calls = 0
    count = len(datagrams)
    start = 0
    while start < count:
        size = len(datagrams[start])
        end, total = start + 1, size
        if _gso["on"]:
            while end < count and end - start < MAX_SEGMENTS:
                length = len(datagrams[end])
                if length > size or total + length > MAX_BYTES:
                    break
                total += length
                end += 1
                if length < size:
                    break
        if end - start > 1:
            try:
                sock.sendmsg(datagrams[start:end], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, addr)
                calls += 1
                start = end
                continue
            except BlockingIOError:
                raise
            except OSError:  # no GSO here (old kernel, device without checksum offload): never again
                _gso["on"] = False
        for datagram in datagrams[start:end]:
            sock.sendto(datagram, addr)
            calls += 1
        start = end
    return calls
