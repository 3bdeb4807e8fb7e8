"""The RTMP player as a hub viewer: live messages framed once per stream, shared by every player.

Live audio and video go out as chunk format 1 on CSID_AUDIO / CSID_VIDEO: the header carries
the timestamp *delta* from the previous message on that chunk stream, which is the same for
every player, so one framing (``Entry.rtmp``) serves all of them whatever their time base.

What is per player is where its chain of deltas starts: the first message on each chunk stream
at join, and again after a skip, is framed for that player with format 0 (an absolute
timestamp measured from its own base, and its own message stream id). A player's chunk stream
is "started" once it got such a message with a non-negative timestamp; from then on the shared
bytes are valid for it, because the previous message on that chunk stream is the same one the
shared delta was computed from. Data messages (metadata, cue points) are rare and framed per
player through its own codec connection, so its header compression state stays right.

Every player uses the same out chunk size (``CHUNK_SIZE``, announced at connect). Message bodies
are the units' FLV tag bodies (``media.codecs.flv_units.tag_body``, once per entry); a unit FLV
cannot carry (VP8, a WebRTC publisher's Opus) is not sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from media.codecs.flv_units import TAG_TYPE, tag_body
from media.hub.fanout import Fanout, Viewer
from media.hub.stream import Entry
from media.hub.unit import AUDIO, DATA, VIDEO
from rtmp.codec.chunk import encode_message
from rtmp.codec.message import CSID_AUDIO, CSID_DATA, CSID_VIDEO, DATA_AMF0, STREAM_EOF

if TYPE_CHECKING:
    from .conn import RtmpConnection

CHUNK_SIZE = 4096
_CSID = {AUDIO: CSID_AUDIO, VIDEO: CSID_VIDEO}


def shared_fmt1(e: Entry) -> bytes | None:
    """The entry's format-1 framing, shared by every started player (cached on the entry)."""
    data = e.rtmp
    if data is None and e.delta is not None:
        kind = e.unit.kind
        data = e.rtmp = encode_message(
            csid=_CSID[kind], fmt=1, timestamp=e.delta, msg_type=TAG_TYPE[kind],
            stream_id=0, payload=tag_body(e), chunk_size=CHUNK_SIZE,
        )
    return data


class RtmpViewer(Viewer):
    """The hub side of one RTMP player. ``rtmp.from_hub.RtmpPlayer`` adds the connection."""

    __slots__ = ("stream_id", "started")

    def __init__(self, transport, stream_id: int) -> None:
        super().__init__(transport)
        self.stream_id = stream_id
        self.started: set[int] = set()

    def frame_data(self, timestamp: int, payload: bytes) -> bytes:
        """A data message (AMF0) framed for this player. Override to use its codec state."""
        return encode_message(
            csid=5, fmt=0, timestamp=timestamp, msg_type=TAG_TYPE[DATA], stream_id=self.stream_id,
            payload=payload, chunk_size=CHUNK_SIZE,
        )


class RtmpFanout(Fanout):
    viewers: list[RtmpViewer]  # type: ignore[assignment]

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._batch_csids: frozenset[int] = frozenset()
        self.shared_writes = 0
        self.own_writes = 0

    # ------------------------------------------------------------- per-player framing

    def viewer_bytes(self, viewer: RtmpViewer, batch: list[Entry]) -> bytes:  # type: ignore[override]
        """``batch`` framed for one player: format 0 where its chain is not started yet."""
        self.own_writes += 1
        out: list[bytes] = []
        base, started, msid = viewer.base, viewer.started, viewer.stream_id
        for e in batch:
            body = tag_body(e)
            if not body:
                continue
            kind = e.unit.kind
            if kind == DATA:
                out.append(viewer.frame_data(max(0, e.ts - base), body))
                continue
            csid = _CSID[kind]
            if csid in started:
                shared = shared_fmt1(e)
                if shared is not None:
                    out.append(shared)
                    continue
            ts = e.ts - base
            if ts >= 0:
                started.add(csid)
            else:
                ts = 0  # before this player's base: clamp, and keep framing format 0
            out.append(encode_message(
                csid=csid, fmt=0, timestamp=ts, msg_type=TAG_TYPE[kind], stream_id=msid,
                payload=body, chunk_size=CHUNK_SIZE,
            ))
        return b"".join(out)

    def _configs(self, viewer: RtmpViewer, ts: int, *, metadata: bool, skip: list[Entry] | tuple = ()) -> list[bytes]:
        stream = self.stream
        out: list[bytes] = []
        if metadata and stream.metadata is not None:
            out.append(viewer.frame_data(0, tag_body(stream.metadata)))
        for cfg in (stream.video_config, stream.audio_config):
            if cfg is None or cfg in skip or not tag_body(cfg):
                continue
            kind = cfg.unit.kind
            # Format 0 without starting the chain: the next message on this csid is format 0 too.
            out.append(encode_message(
                csid=_CSID[kind], fmt=0, timestamp=ts, msg_type=TAG_TYPE[kind], stream_id=viewer.stream_id,
                payload=tag_body(cfg), chunk_size=CHUNK_SIZE,
            ))
        return out

    def start_bytes(self, viewer: RtmpViewer, gop: list[Entry], base: int) -> bytes:  # type: ignore[override]
        viewer.started = set()
        out = self._configs(viewer, 0, metadata=True, skip=gop)
        out.append(self.viewer_bytes(viewer, gop))
        self.own_writes -= 1
        return b"".join(out)

    def late_start_bytes(self, viewer: RtmpViewer, rap: Entry) -> bytes:  # type: ignore[override]
        viewer.started = set()
        return b"".join(self._configs(viewer, 0, metadata=True))

    def resume_bytes(self, viewer: RtmpViewer, rap: Entry) -> bytes:  # type: ignore[override]
        viewer.started = set()
        if viewer.config_gen == self.stream.config_gen:
            return b""
        return b"".join(self._configs(viewer, max(0, rap.ts - viewer.base), metadata=False))

    def on_paused(self, viewer: RtmpViewer) -> None:  # type: ignore[override]
        viewer.started = set()

    # ------------------------------------------------------------- the shared batch

    def send(self, batch: list[Entry], now: float) -> None:
        pieces: list[bytes] = []
        csids: set[int] = set()
        ok = True
        for e in batch:
            kind = e.unit.kind
            if kind == DATA:
                ok = False
                continue
            if not tag_body(e):
                continue
            csids.add(_CSID[kind])
            data = shared_fmt1(e)
            if data is None:
                ok = False
            elif ok:
                pieces.append(data)
        self._batch_csids = frozenset(csids)
        shared = b"".join(pieces) if ok else None
        self.write_all(self.viewers, shared, batch, now)

    def is_synced(self, viewer: RtmpViewer, batch: list[Entry]) -> bool:  # type: ignore[override]
        if self._batch_csids <= viewer.started:
            self.shared_writes += 1
            return True
        return False


class RtmpPlayer(RtmpViewer):
    __slots__ = ("conn",)

    def __init__(self, conn: RtmpConnection, stream_id: int) -> None:
        super().__init__(conn.transport, stream_id)
        self.conn = conn

    def frame_data(self, timestamp: int, payload: bytes) -> bytes:
        # Through the player's own codec: csid 5 also carries its onStatus messages, and the
        # codec compresses headers against the previous message on a chunk stream.
        return self.conn.codec.send_message(CSID_DATA, DATA_AMF0, self.stream_id, timestamp, payload)

    def stream_ended(self, reason: str) -> None:
        conn = self.conn
        conn.player = None
        codec = conn.codec
        t = self.transport
        if not t.is_closing():
            t.write(
                codec.on_status(
                    self.stream_id, level="status", code="NetStream.Play.UnpublishNotify",
                    description=f"{conn.play_name} is now unpublished.",
                )
                + codec.user_control(STREAM_EOF, self.stream_id)
            )
        conn.close()

    def dropped_slow(self) -> None:
        self.conn.player = None
        self.conn.abort("viewer too slow")
