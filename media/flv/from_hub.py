"""HTTP-FLV framing for the hub: FLV tags in HTTP/1.1 chunked transfer coding.

An FLV tag header holds an absolute timestamp, so viewers are grouped by their time base (the
start of the GOP they joined at): each group's tags are framed once per batch, wrapped in one
HTTP chunk, and the same bytes object is written to every viewer of the group. Tag bodies and
previous-tag-size trailers are shared by all groups (``Entry.flv`` and ``Entry.flv_tail``, built
once per entry from the unit by ``media.codecs.flv_units``); a unit FLV cannot carry is left out,
and the FLV header announces only the tracks FLV carries.
"""

from __future__ import annotations

import struct

from media.codecs.flv import flv_header, flv_tag_header
from media.codecs.flv_units import TAG_TYPE, carries, tag_body
from media.hub.fanout import ACTIVE, PAUSED, Fanout, Viewer
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


def tag_parts(entries: list[Entry], base: int, out: list[bytes]) -> None:
    """Append the FLV tags of ``entries`` with timestamps measured from ``base``."""
    for e in entries:
        p = tag_body(e)
        if not p:
            continue
        ts = e.ts - base
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

    __slots__ = ("group",)

    def __init__(self, transport) -> None:
        super().__init__(transport)
        self.group: list[FlvViewer] | None = None

    def stream_ended(self, reason: str) -> None:
        t = self.transport
        if not t.is_closing():
            t.write(CHUNKED_END)
            t.close()


class FlvFanout(Fanout):
    viewers: list[FlvViewer]  # type: ignore[assignment]

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.groups: dict[int, list[FlvViewer]] = {}
        self.group_framings = 0

    # ------------------------------------------------------------- groups

    def _join_group(self, v: FlvViewer) -> None:
        if v.group is None:
            g = self.groups.get(v.base)
            if g is None:
                g = self.groups[v.base] = []
            g.append(v)
            v.group = g

    def on_added(self, viewer: FlvViewer) -> None:  # type: ignore[override]
        if viewer.state == ACTIVE:
            self._join_group(viewer)

    def on_resumed(self, viewer: FlvViewer) -> None:  # type: ignore[override]
        self._join_group(viewer)

    def on_removed(self, viewer: FlvViewer) -> None:  # type: ignore[override]
        g = viewer.group
        if g is not None:
            viewer.group = None
            try:
                g.remove(viewer)
            except ValueError:
                pass
            if not g:
                self.groups.pop(viewer.base, None)

    # ------------------------------------------------------------- start bytes

    def _head(self, *, header: bool, ts: int, metadata: bool) -> list[bytes]:
        stream = self.stream
        parts: list[bytes] = []
        if header:
            parts.append(flv_header(audio=carries(stream.audio_codec), video=carries(stream.video_codec)))
        if metadata and stream.metadata is not None:
            parts += _tag(stream.metadata, 0)
        for cfg in (stream.video_config, stream.audio_config):
            if cfg is not None:
                parts += _tag(cfg, ts)
        return parts

    def start_bytes(self, viewer: FlvViewer, gop: list[Entry], base: int) -> bytes:  # type: ignore[override]
        parts = self._head(header=True, ts=0, metadata=True)
        tag_parts(gop, base, parts)
        return http_chunk(parts)

    def late_start_bytes(self, viewer: FlvViewer, rap: Entry) -> bytes:  # type: ignore[override]
        return http_chunk(self._head(header=True, ts=0, metadata=True))

    def resume_bytes(self, viewer: FlvViewer, rap: Entry) -> bytes:  # type: ignore[override]
        if viewer.config_gen == self.stream.config_gen:
            return b""
        return http_chunk(self._head(header=False, ts=max(0, rap.ts - viewer.base), metadata=False))

    # ------------------------------------------------------------- the shared batch

    def send(self, batch: list[Entry], now: float) -> None:
        for base, members in list(self.groups.items()):
            if any(v.state == ACTIVE for v in members):
                parts: list[bytes] = []
                tag_parts(batch, base, parts)
                shared = http_chunk(parts)
                self.group_framings += 1
                self.write_all(members, shared, batch, now)
            else:
                for v in list(members):
                    if v.state == PAUSED:
                        self.check_paused(v, now)
