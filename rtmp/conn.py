"""One RTMP connection: an asyncio.Protocol around the sans-I/O ``ServerConnection``.

A connection becomes a publisher (``publish`` on app ``live`` with a stream key) or a player
(``play`` of ``live/{public_id}``). Publishers write AccessUnits into the hub's Stream; players
are hub viewers (``rtmp.from_hub.RtmpPlayer``) with no task of their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING

from media.bridges.rendition import TranscodeRefused, for_flv
from media.codecs.errors import CodecError
from media.control import ERROR, PUBLISHER_LEFT, normalize_end_reason
from media.hub.registry import StreamAlreadyLive
from media.hub.stream import Stream
from media.hub.viewers import PlayRefused, ViewerSession
from media.merged_read import MergedRead
from rtmp.codec.connection import ServerConnection
from rtmp.codec.errors import RtmpProtocolError
from rtmp.codec.message import (
    STREAM_BEGIN,
    AudioData,
    CloseStream,
    Connect,
    ConnectionClosed,
    CreateStream,
    DataMessage,
    DeleteStream,
    FCPublish,
    FCUnpublish,
    Metadata,
    OtherCommand,
    Play,
    Publish,
    ReleaseStream,
    VideoData,
)

from .from_hub import CHUNK_SIZE, RtmpFanout, RtmpPlayer
from .to_hub import RtmpToHub

if TYPE_CHECKING:
    from .server import RtmpServer

log = logging.getLogger(__name__)

APP = "live"
MAX_STREAMS_PER_CONNECTION = 8
_MEDIA_EVENTS = (VideoData, AudioData, Metadata, DataMessage)


def key_log_id(stream_key: str) -> str:
    """A short, non-reversible id of a stream key for logs (never log the key)."""
    return "key#" + hashlib.sha256(stream_key.encode("utf-8", "replace")).hexdigest()[:8]


def _strip_query(name: str) -> str:
    return name.split("?", 1)[0].strip()


class RtmpConnection(asyncio.Protocol):
    def __init__(self, server: RtmpServer) -> None:
        self.server = server
        self.config = server.config
        self.codec = ServerConnection(max_message_size=server.config.rtmp_max_message_size)
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.peer = "?"
        self.app: str | None = None
        self.closed = False
        self._stream_ids: set[int] = set()
        self._next_stream_id = 1
        self._timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        self._busy: asyncio.Task | None = None  # the publish or play authorization
        self._last_data = 0.0
        self._merged: MergedRead | None = None  # while publishing
        self._arrived: float | None = None  # when the bytes being handled arrived (None: now)
        # publisher
        self.publishing = False  # a publish was requested (authorizing or live)
        self.stream: Stream | None = None
        self.publish_stream_id = 0
        self.grant = None
        self._bytes_before = 0  # received by the earlier publishes of a session this one resumed
        self.media_dropped = 0
        self.to_hub = RtmpToHub()
        # player
        self.player: RtmpPlayer | None = None
        self.play_name = ""
        self.viewer_session: ViewerSession | None = None

    # ------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.server.connections.add(self)
        loop = self._loop = asyncio.get_running_loop()
        self._last_data = loop.time()
        self._timer = loop.call_later(self.config.rtmp_handshake_timeout, self._on_setup_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._last_data = now = self._loop.time()  # type: ignore[union-attr]
        # Bytes the merged read held under its mark are dated to the read before (the loop's
        # clock is the monotonic one the hub's streams use, under asyncio and uvloop alike).
        self._arrived = self._merged.read(len(data), now) if self._merged is not None else None
        try:
            events = self.codec.receive_data(data)
        except RtmpProtocolError as e:
            self._fail(f"protocol error: {e}")
            return
        out = self.codec.data_to_send()
        if out:
            self.transport.write(out)  # type: ignore[union-attr]
        try:
            for ev in events:
                if self.closed:
                    break
                self._handle(ev)
        except (RtmpProtocolError, CodecError) as e:
            self._fail(f"protocol error: {e}")

    def eof_received(self) -> bool:
        self._on_gone()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_gone()
        self.closed = True
        for t in (self._timer, self._abort_timer):
            if t is not None:
                t.cancel()
        self._timer = self._abort_timer = None
        # A publish authorization in flight runs to its end: if it opened a session, it must
        # report that session ended.
        self.server.connections.discard(self)

    def pause_writing(self) -> None:  # players are bounded by the hub's buffer check
        pass

    def resume_writing(self) -> None:
        pass

    # ------------------------------------------------------------- events

    def _handle(self, ev: object) -> None:
        if isinstance(ev, _MEDIA_EVENTS):
            stream = self.stream
            if stream is None or ev.stream_id != self.publish_stream_id:  # type: ignore[attr-defined]
                self.media_dropped += 1
                return
            if stream.closed:  # ended from elsewhere (registry): this publish is over
                self._end_publish(stream.close_reason or ERROR)
                self.abort("stream ended")
                return
            unit = self.to_hub.unit(ev)
            if unit is not None:
                stream.write(unit, self._arrived)
            return
        codec = self.codec
        t = self.transport
        assert t is not None
        if isinstance(ev, Connect):
            app = _strip_query(ev.app).strip("/")
            if self.app is not None:
                self._fail("second connect")
                return
            if app != APP:
                log.info("rtmp %s: connect to unknown app %r refused", self.peer, app[:64])
                t.write(codec.reject_connect(ev.transaction_id, f"unknown application {app[:64]!r}"))
                self.close()
                return
            self.app = app
            t.write(codec.accept_connect(ev.transaction_id, chunk_size=CHUNK_SIZE))
        elif isinstance(ev, (ReleaseStream, FCPublish)):
            if self.app is None:
                return self._fail("command before connect")
            if isinstance(ev, FCPublish):
                t.write(codec.result(ev.transaction_id, None))
        elif isinstance(ev, CreateStream):
            if self.app is None:
                return self._fail("command before connect")
            if len(self._stream_ids) >= MAX_STREAMS_PER_CONNECTION:
                return self._fail("too many streams")
            sid = self._next_stream_id
            self._next_stream_id += 1
            self._stream_ids.add(sid)
            t.write(codec.create_stream_result(ev.transaction_id, sid))
        elif isinstance(ev, Publish):
            self._on_publish(ev)
        elif isinstance(ev, Play):
            self._on_play(ev)
        elif isinstance(ev, (FCUnpublish,)):
            if self.publishing:
                self._end_publish(PUBLISHER_LEFT)
        elif isinstance(ev, DeleteStream):
            self._stream_ids.discard(ev.stream_id_to_delete)
            if self.publishing and ev.stream_id_to_delete == self.publish_stream_id:
                self._end_publish(PUBLISHER_LEFT)
            elif self.player is not None and ev.stream_id_to_delete == self.player.stream_id:
                self._stop_playing()
        elif isinstance(ev, CloseStream):
            if self.publishing and ev.stream_id == self.publish_stream_id:
                self._end_publish(PUBLISHER_LEFT)
            elif self.player is not None and ev.stream_id == self.player.stream_id:
                self._stop_playing()
        elif isinstance(ev, ConnectionClosed):
            self._on_gone()
        elif isinstance(ev, OtherCommand):
            # getStreamLength, checkBandwidth, _checkbw...: answer calls that expect an answer.
            if ev.transaction_id and ev.name in ("getStreamLength", "_checkbw", "checkBandwidth"):
                t.write(codec.result(ev.transaction_id, None))

    def _stream_command_ok(self, stream_id: int) -> bool:
        if self.app is None:
            self._fail("command before connect")
            return False
        if stream_id not in self._stream_ids:
            self._fail(f"command on unknown stream id {stream_id}")
            return False
        if self.publishing or self.player is not None or self._busy is not None:
            self._fail("second publish/play on one connection")
            return False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return True

    # ------------------------------------------------------------- publish

    def _on_publish(self, ev: Publish) -> None:
        if not self._stream_command_ok(ev.stream_id):
            return
        key = _strip_query(ev.name)
        self.publishing = True
        self.publish_stream_id = ev.stream_id
        self._busy = self.server.spawn(self._authorize_publish(key, ev.stream_id), name=f"rtmp-auth-{self.peer}")

    def _refuse_publish(self, stream_id: int, key: str, reason: str, why: str) -> None:
        """Refuse with `reason` (the metrics' label) and `why` (the client's status description)."""
        log.info("rtmp %s: publish refused for %s: %s", self.peer, key_log_id(key), why)
        self.server.registry.publish_refused[reason] += 1
        if not self.closed and self.transport is not None:
            self.transport.write(self.codec.on_status(
                stream_id, level="error", code="NetStream.Publish.BadName", description=why,
            ))
        self.publishing = False
        self.close()

    async def _authorize_publish(self, key: str, stream_id: int) -> None:
        control = self.server.control
        registry = self.server.registry
        # A room whose stream waits for its publisher (reconnect grace), or whose publisher here
        # fell silent, may be published again: the stream and its session continue.
        held = registry.resumable()
        resumable = {"resumable": held} if held else {}
        try:
            try:
                grant = await control.publish_authorize(stream_key=key, protocol="rtmp", client_addr=self.peer,
                                                        **resumable)
            except control.publish_refused as e:
                reason = getattr(e, "reason", "refused")
                self._refuse_publish(stream_id, key, reason, f"{reason}: {getattr(e, 'message', e)}"
                                     if reason != "bad_key" else "bad_key: unknown stream key")
                return
            except Exception as e:
                log.exception("rtmp %s: publish authorization failed", self.peer)
                self._refuse_publish(stream_id, key, "error", f"authorization failed ({type(e).__name__})")
                return
        finally:
            self._busy = None
        self.grant = grant
        public_id = grant.public_id
        resumed = getattr(grant, "resumed", False)
        if self.closed or not self.publishing:
            log.info("rtmp %s: publisher %s left during authorization", self.peer, public_id)
            if not resumed:  # the session opened must end (a resumed one is still the held stream's)
                self.server.report_end(grant.session_id, PUBLISHER_LEFT, self.codec.bytes_received, 0)
            return
        if resumed:
            await registry.take_over(public_id)
            held = registry.resume(public_id, grant.session_id, self, protocol="rtmp", client_addr=self.peer)
            if held is None:  # its grace ended (and so its session) while this publish was authorized
                self._refuse_publish(stream_id, key, "grace_over",
                                     f"grace_over: the stream of {public_id} ended meanwhile; publish again")
                return
            self.stream = held.stream
            self._bytes_before = held.bytes_received
        else:
            try:
                self.stream = registry.start(public_id, publisher=self, protocol="rtmp", client_addr=self.peer,
                                             session_id=grant.session_id)
            except StreamAlreadyLive:
                self.server.report_end(grant.session_id, ERROR, self.codec.bytes_received, 0)
                self._refuse_publish(stream_id, key, "already_live",
                                     f"already_live: {public_id} already has a publisher")
                return
        log.info("rtmp %s: publishing %s (session %s%s)", self.peer, public_id, grant.session_id,
                 ", resumed" if resumed else "")
        self.transport.write(self.codec.on_status(  # type: ignore[union-attr]
            stream_id, level="status", code="NetStream.Publish.Start",
            description=f"{public_id} is now published.",
        ))
        self._merged = MergedRead(self.transport.get_extra_info("socket"),  # type: ignore[union-attr]
                                  self.config.rtmp_merged_read_ms, asyncio.get_running_loop().time())
        self._arm_idle()

    def _arm_idle(self) -> None:
        timeout = self.server.idle_timeout
        if timeout > 0 and not self.closed:
            self._timer = asyncio.get_running_loop().call_later(timeout / 2, self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        if self.stream is None or self.closed:
            return
        idle = asyncio.get_running_loop().time() - self._last_data
        if idle > self.server.idle_timeout:
            log.info("rtmp %s: publisher idle for %.0f s, closing", self.peer, idle)
            self._end_publish(ERROR, grace=True)
            self.abort("idle")
            return
        self._arm_idle()

    def _end_publish(self, reason: str, *, grace: bool = False) -> None:
        """The publish is over (left, dropped, error): close the stream, report the end once.

        With ``grace`` (the connection was lost, no unpublish) the stream may instead be held for
        a reconnect; the registry reports the session's end if nobody comes back.
        """
        if not self.publishing:
            return
        self.publishing = False
        self._merge_off()
        stream, self.stream = self.stream, None
        if stream is None:
            return  # still authorizing: _authorize_publish reports the end
        grant = self.grant
        received = self._bytes_before + self.codec.bytes_received
        registry = self.server.registry
        if grace and registry.hold(grant.public_id, stream, reason, session_id=grant.session_id,
                                   bytes_received=received, end_session=self._session_ender(stream)):
            log.info("rtmp %s: %s lost its publisher, %d bytes in", self.peer, grant.public_id, received)
            return
        registry.end(grant.public_id, reason, stream=stream)
        log.info(
            "rtmp %s: %s ended (%s), %d bytes in, peak %d viewers",
            self.peer, grant.public_id, reason, received, stream.peak_viewers,
        )
        self.server.report_end(grant.session_id, reason, received, stream.peak_viewers)

    def _session_ender(self, stream: Stream):
        """What ends a held stream's session (after the grace, or a staff drop during it)."""
        server, session_id = self.server, self.grant.session_id

        def end_session(reason: str, received: int) -> None:
            server.report_end(session_id, normalize_end_reason(reason), received, stream.peak_viewers)

        return end_session

    def drop(self, reason: str) -> None:
        """Staff action (registry's MediaControl): close this publisher now."""
        self._end_publish(normalize_end_reason(reason))
        self.abort("dropped")

    async def lost(self) -> None:
        """A new publish takes over from this silent one (registry.take_over): as a lost connection."""
        self._end_publish(PUBLISHER_LEFT, grace=True)
        self.abort("taken over")

    # ------------------------------------------------------------- play

    def _on_play(self, ev: Play) -> None:
        if not self._stream_command_ok(ev.stream_id):
            return
        name = _strip_query(ev.name)
        self.play_name = name
        # A stream the registry holds is a live room's: playing it needs no database round trip.
        stream = self.server.registry.get(name)
        if stream is None or stream.closed:
            self._busy = self.server.spawn(self._play_not_found(ev.stream_id, name), name=f"rtmp-play-{self.peer}")
            return
        try:
            stream = for_flv(stream)  # a WebRTC publisher's VP8/Opus as H.264/AAC
        except TranscodeRefused as exc:
            log.warning("rtmp %s: play of %s refused: %s", self.peer, name[:64], exc)
            self._refuse_play(ev.stream_id, str(exc))
            return
        self._busy = self.server.spawn(self._authorize_play(ev.stream_id, stream), name=f"rtmp-play-{self.peer}")

    def _refuse_play(self, stream_id: int, why: str) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(self.codec.on_status(
                stream_id, level="error", code="NetStream.Play.Failed", description=why))
        self.close()

    async def _authorize_play(self, stream_id: int, stream: Stream) -> None:
        """The control plane's word on this player (the on_play hook), then its start."""
        viewers = self.server.registry.viewers
        try:
            session = await viewers.open(stream.public_id, "rtmp", self.peer)
        except PlayRefused as refused:
            self._refuse_play(stream_id, f"{refused.reason}: {refused.message}")
            return
        except Exception as e:
            log.exception("rtmp %s: play authorization failed", self.peer)
            self._refuse_play(stream_id, f"authorization failed ({type(e).__name__})")
            return
        finally:
            self._busy = None
        if self.closed or stream.closed:
            viewers.close(session)
            return
        self.viewer_session = session
        session.drop = self.close
        self._start_playing(stream_id, stream)
        player = self.player
        if player is not None:
            session.sent = lambda: player.sent

    def _viewer_session_end(self) -> None:
        session, self.viewer_session = self.viewer_session, None
        if session is not None:
            self.server.registry.viewers.close(session)

    async def _play_not_found(self, stream_id: int, name: str) -> None:
        """Not live here: say where it is live when another node holds it (RTMP has no redirect
        that players follow), else that it is not live."""
        holder = None
        control = self.server.control
        if control is not None and control.stream_holder is not None:
            try:
                holder = await control.stream_holder(public_id=name[:128])
            except Exception:
                log.exception("rtmp %s: the holder of %r could not be looked up", self.peer, name[:64])
        self._busy = None
        description = f"{name[:64]} is live on another node: play {holder['rtmp_play']}/{name[:64]}" if holder \
            else f"{name[:64]} is not live."
        log.info("rtmp %s: play of %r: %s", self.peer, name[:64], "on another node" if holder else "not found")
        if self.closed or self.transport is None:
            return
        self.transport.write(self.codec.on_status(
            stream_id, level="error", code="NetStream.Play.StreamNotFound", description=description))
        self.close()

    def _start_playing(self, stream_id: int, stream: Stream) -> None:
        codec = self.codec
        if codec.out_chunk_size != CHUNK_SIZE:
            self._fail("out chunk size changed")
            return
        name = self.play_name
        self.transport.write(  # type: ignore[union-attr]
            codec.user_control(STREAM_BEGIN, stream_id)
            + codec.on_status(stream_id, level="status", code="NetStream.Play.Reset",
                              description=f"Playing and resetting {name}.")
            + codec.on_status(stream_id, level="status", code="NetStream.Play.Start",
                              description=f"Started playing {name}.")
            + codec.sample_access(stream_id)
            + codec.on_status(stream_id, level="status", code="NetStream.Data.Start",
                              description="Started playing.")
        )
        player = RtmpPlayer(self, stream_id)
        self.player = player
        stream.fanout(RtmpFanout).add(player)

    def _stop_playing(self) -> None:
        self._viewer_session_end()
        player, self.player = self.player, None
        if player is not None:
            if player.fanout is not None:
                player.fanout.remove(player)

    # ------------------------------------------------------------- end

    def _on_setup_timeout(self) -> None:
        self._timer = None
        if not (self.publishing or self.player is not None or self._busy is not None):
            log.info("rtmp %s: no publish or play within %.0f s, closing", self.peer,
                     self.config.rtmp_handshake_timeout)
            self.abort("setup timeout")

    def _on_gone(self) -> None:
        """The peer closed (EOF) or the socket died: no unpublish, so a reconnect may continue."""
        if self.publishing:
            self._end_publish(PUBLISHER_LEFT, grace=True)
        if self.player is not None:
            self._stop_playing()
        self._viewer_session_end()

    def tick_merged_read(self, now: float) -> None:
        if self._merged is not None:
            self._merged.tick(now)

    def _merge_off(self) -> None:
        if self._merged is not None:
            self._merged.close()
            self._merged = None

    def _fail(self, why: str) -> None:
        log.info("rtmp %s: %s; closing the connection", self.peer, why)
        if self.publishing:
            self._end_publish(ERROR)
        self.abort(why)

    def close(self) -> None:
        """Close after what is buffered is sent; abort if the peer does not read it."""
        t = self.transport
        if t is None or self.closed:
            return
        if self.player is not None:
            self._stop_playing()
        self._viewer_session_end()
        self._merge_off()  # before the socket closes: its number may be reused by the next one
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        t.close()
        if t.get_write_buffer_size():
            self._abort_timer = asyncio.get_running_loop().call_later(self.config.viewer_drop_after, t.abort)

    def abort(self, why: str = "") -> None:
        t = self.transport
        if self.player is not None:
            self._stop_playing()
        self._viewer_session_end()
        self._merge_off()  # before the socket closes: its number may be reused by the next one
        self.closed = True
        if t is not None:
            t.abort()
