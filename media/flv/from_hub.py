"""HTTP-FLV framing for the hub: FLV tags in HTTP/1.1 chunked transfer coding.

An FLV tag header holds an absolute timestamp, so every viewer gets the stream's own timestamps
(a viewer joining an hour in starts near 3600 s, as nginx-rtmp's players do; FLV players start
their timeline at the first tag). Each batch is then framed once per stream, wrapped in one HTTP
chunk, and the same bytes object is written to every viewer, whatever GOP it joined at. Tag
bodies and previous-tag-size trailers are built once per entry from the unit (``Entry.flv`` and
``Entry.flv_tail``, ``media.codecs.flv_units``); a unit FLV cannot carry is left out, and the FLV
header announces only the tracks FLV carries.
"""

from __future__ import annotations

import struct

from media.codecs.flv import flv_header, flv_tag_header
from media.codecs.flv_units import TAG_TYPE, carries, tag_body
from media.hub.fanout import Fanout, Viewer
from media.hub.stream import Entry

_U32 = struct.Struct(">I")
CHUNKED_END = b"0\r\n\r\n"


def http_chunk(parts: list[bytes]) -> bytes:
    """``parts`` joined as one HTTP chunk (hex length CRLF data CRLF), one copy."""
    size = sum(len(p) for p in parts)
    if not size:
        return b""
    return b"".join([b"%x\r\n" % size, *parts, b"\r\n"])


def _tail(e: Entry) -> bytes:
    t = e.flv_tail
    if t is None:
        t = e.flv_tail = _U32.pack(11 + len(tag_body(e)))
    return t


def tag_parts(entries: list[Entry], out: list[bytes]) -> None:
    """Append the FLV tags of ``entries``, stamped with the stream's timestamps."""
    for e in entries:
        p = tag_body(e)
        if not p:
            continue
        ts = e.ts
        out.append(flv_tag_header(TAG_TYPE[e.unit.kind], ts if ts > 0 else 0, len(p)))
        out.append(p)
        out.append(_tail(e))


def _tag(e: Entry, ts: int) -> list[bytes]:
    payload = tag_body(e)
    if not payload:
        return []
    return [flv_tag_header(TAG_TYPE[e.unit.kind], ts, len(payload)), payload, _U32.pack(11 + len(payload))]


class FlvViewer(Viewer):
    """One HTTP-FLV response. The HTTP server writes the response head before adding it."""

    __slots__ = ()

    def stream_ended(self, reason: str) -> None:
        t = self.transport
        if not t.is_closing():
            t.write(CHUNKED_END)
            t.close()


class FlvFanout(Fanout):
    viewers: list[FlvViewer]  # type: ignore[assignment]

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.framings = 0  # batches framed: one per batch, whatever the number of viewers

    # ------------------------------------------------------------- start bytes

    def _head(self, *, header: bool, ts: int, metadata: bool) -> list[bytes]:
        """FLV header, metadata and sequence headers, stamped ``ts`` (the first media tag's)."""
        stream = self.stream
        parts: list[bytes] = []
        if header:
            parts.append(flv_header(audio=carries(stream.audio_codec), video=carries(stream.video_codec)))
        if metadata and stream.metadata is not None:
            parts += _tag(stream.metadata, ts)
        for cfg in (stream.video_config, stream.audio_config):
            if cfg is not None:
                parts += _tag(cfg, ts)
        return parts

    def start_bytes(self, viewer: FlvViewer, gop: list[Entry], base: int) -> bytes:  # type: ignore[override]
        parts = self._head(header=True, ts=max(0, base), metadata=True)
        tag_parts(gop, parts)
        return http_chunk(parts)

    def late_start_bytes(self, viewer: FlvViewer, rap: Entry) -> bytes:  # type: ignore[override]
        return http_chunk(self._head(header=True, ts=max(0, rap.ts), metadata=True))

    def resume_bytes(self, viewer: FlvViewer, rap: Entry) -> bytes:  # type: ignore[override]
        if viewer.config_gen == self.stream.config_gen:
            return b""
        return http_chunk(self._head(header=False, ts=max(0, rap.ts), metadata=False))

    # ------------------------------------------------------------- the shared batch

    def send(self, batch: list[Entry], now: float) -> None:
        parts: list[bytes] = []
        tag_parts(batch, parts)
        shared = http_chunk(parts)
        self.framings += 1
        self.write_all(self.viewers, shared, batch, now)
