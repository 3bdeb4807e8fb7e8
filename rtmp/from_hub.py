"""The RTMP player as a hub viewer: the stream's shared bytes go straight to its transport."""

from __future__ import annotations

from typing import TYPE_CHECKING

from media.writers.rtmp import RtmpViewer
from rtmp.codec.message import CSID_DATA, DATA_AMF0, STREAM_EOF

if TYPE_CHECKING:
    from .conn import RtmpConnection


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
