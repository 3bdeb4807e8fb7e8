"""The SFU's state in this process: rooms, their WebRTC publisher, viewers and call peers.

A room has at most one *broadcast* publisher (WHIP, or the socket's `offer` from the owner): it
opens the room's live session like RTMP does and is the source of the room's hub stream, the one
RTMP, HTTP-FLV and HLS viewers read too. WHEP/socket viewers play the room's hub stream, whoever
publishes it (an OBS stream over RTMP as well). A room also holds up to ROOM_MAX_PEERS *call
peers* (`rtc:join`), each producing at most one audio+video stream and consuming the others':
one peer connection per direction per remote peer; a peer's stream is a hub stream of its own
(not in the registry, so not on RTMP/HLS), on the same unit and fan-out code.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings

from live import media_api
from live.events import room_event_send
from media.bridges.rendition import WEBRTC, playable, rendition_notes, transcode_stats
from media.config import MediaConfig
from media.control import normalize_end_reason
from media.hub.registry import StreamAlreadyLive, StreamRegistry
from media.hub.stream import Stream
from media.hub.viewers import PlayRefused

from .aiortc_hooks import rtp_bytes_sent
from .from_hub import stream_out
from .sdp import SfuError
from .session import PublisherSession, Session, SubscriberSession, publisher_open, subscriber_open
from .stats import Samples

log = logging.getLogger(__name__)


@dataclass(eq=False)
class CallPeer:
    peer_id: str
    user: str
    channel_name: str = ""
    producer: PublisherSession | None = None
    consumers: dict[str, SubscriberSession] = field(default_factory=dict)  # producer peer id -> session

    def describe(self) -> dict:
        kinds = sorted(self.producer.codecs) if self.producer else []
        return {"peerId": self.peer_id, "user": self.user,
                "producers": [{"producerId": self.producer.id, "kinds": kinds}] if self.producer else []}


@dataclass(eq=False)
class RtcRoom:
    public_id: str
    broadcast: PublisherSession | None = None
    grant: media_api.PublishGrant | None = None
    viewers: set[SubscriberSession] = field(default_factory=set)
    peers: dict[str, CallPeer] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.broadcast is None and not self.viewers and not self.peers


class BroadcastPublisher:
    """The registry's handle on a WHIP publisher (staff drops)."""

    def __init__(self, session: PublisherSession) -> None:
        self.session = session

    def drop(self, reason: str) -> None:
        close_soon(self.session.close(normalize_end_reason(reason)))

    async def lost(self) -> None:
        """A new publish takes over from this silent one: as if its ICE consent had run out."""
        await self.session.close("timeout")


_closing: set[asyncio.Task] = set()  # closes in flight: a task nobody references may be collected


def close_soon(closing) -> None:
    """Run a session's close as a task kept alive until it is done (staff drops are sync calls)."""
    task = asyncio.ensure_future(closing)
    _closing.add(task)
    task.add_done_callback(_closing.discard)


class Sfu:
    def __init__(self, registry: StreamRegistry | None = None) -> None:
        # The hub's registry: shared with the media plane when it runs in this process.
        self.registry = registry if registry is not None else StreamRegistry(MediaConfig.from_env())
        self.rooms: dict[str, RtcRoom] = {}
        self.sessions: dict[str, Session] = {}
        self.counters: Counter[str] = Counter()
        self.latency = Samples()

    # -- bookkeeping ------------------------------------------------------------------------------

    def room(self, public_id: str) -> RtcRoom:
        room = self.rooms.get(public_id)
        if room is None:
            room = self.rooms[public_id] = RtcRoom(public_id)
        return room

    def _forget_room_if_empty(self, room: RtcRoom) -> None:
        if room.empty and self.rooms.get(room.public_id) is room:
            del self.rooms[room.public_id]

    def _opened(self, session: Session) -> None:
        self.sessions[session.id] = session
        self.counters[f"{session.kind}s_opened"] += 1

    def _closed(self, session: Session, reason: str) -> None:
        self.sessions.pop(session.id, None)
        self.counters[f"{session.kind}s_closed"] += 1
        if reason == "timeout":
            self.counters[f"{session.kind}s_timed_out"] += 1

    def stats(self) -> dict:
        return {
            "rooms": len(self.rooms),
            "publishers": sum(1 for s in self.sessions.values() if s.kind == "publisher"),
            "subscribers": sum(1 for s in self.sessions.values() if s.kind == "subscriber"),
            "peers": sum(len(r.peers) for r in self.rooms.values()),
            "counters": dict(self.counters),
            "latency": self.latency.summary_ms(),
            "transcodes": transcode_stats(self.registry.config),
        }

    # -- broadcast: WHIP / WHEP / socket offer ----------------------------------------------------

    async def broadcast_start(self, public_id: str, stream_key: str, offer: str,
                              client_addr: str = "") -> tuple[PublisherSession, str]:
        from .sdp import codec_choose, offer_parse

        parsed = offer_parse(offer, sending=True)  # refuse bad offers before opening a live session
        for media in parsed.media:
            codec_choose(media, settings.RTC_VIDEO_CODECS if media.kind == "video" else settings.RTC_AUDIO_CODECS)
        if not stream_key:
            raise SfuError(401, "no_key", "send the stream key as Authorization: Bearer <stream key>")
        # A room whose stream waits for its publisher (reconnect grace), or whose publisher here
        # fell silent, may be published again: the stream and its session continue.
        resumable = self.registry.resumable()
        try:
            grant = await media_api.publish_authorize(stream_key=stream_key, protocol="webrtc",
                                                      expected_public_id=public_id, client_addr=client_addr,
                                                      resumable=resumable or None)
        except media_api.PublishRefused as refused:
            self.registry.publish_refused[refused.reason] += 1
            if refused.reason == "hook_refused":
                raise SfuError(403, "hook_refused", refused.message) from None
            if refused.reason == "already_live":
                raise SfuError(409, "already_live", "this room already has a publisher") from None
            if refused.reason == "wrong_room":
                raise SfuError(403, "wrong_room", "this stream key belongs to another room") from None
            raise SfuError(401, "bad_key", "unknown or rotated stream key") from None
        try:
            session, answer = await publisher_open(offer, on_closed=self._broadcast_closed)
        except SfuError:
            if not grant.resumed:  # a resumed session is still the held stream's
                await self._end_session(grant, "error", 0, 0)
            raise
        stream = await (self._resume if grant.resumed else self._start)(grant, session, client_addr)
        session.attach(stream)
        room = self.room(public_id)
        room.broadcast, room.grant = session, grant
        session.room = room  # type: ignore[attr-defined]
        self._opened(session)
        log.info("sfu: %s publishing %s over WebRTC", public_id, session.codecs)
        return session, answer

    async def _start(self, grant: media_api.PublishGrant, session: PublisherSession, client_addr: str) -> Stream:
        try:
            return self.registry.start(grant.public_id, BroadcastPublisher(session), protocol="webrtc",
                                       keyframe_source=session.source.request_keyframe, client_addr=client_addr,
                                       session_id=grant.session_id)
        except StreamAlreadyLive:
            self.registry.publish_refused["already_live"] += 1
            await session.abort()
            await self._end_session(grant, "error", 0, 0)
            raise SfuError(409, "already_live", "this room already has a publisher") from None

    async def _resume(self, grant: media_api.PublishGrant, session: PublisherSession, client_addr: str) -> Stream:
        """Continue the room's held stream (or take over from its silent publisher here)."""
        await self.registry.take_over(grant.public_id)
        held = self.registry.resume(grant.public_id, grant.session_id, BroadcastPublisher(session),
                                    protocol="webrtc", keyframe_source=session.source.request_keyframe,
                                    client_addr=client_addr)
        if held is None:  # its grace ended (and so its session) while this publish was authorized
            self.registry.publish_refused["grace_over"] += 1
            await session.abort()
            raise SfuError(409, "grace_over", "the room's stream ended meanwhile; publish again")
        session.bytes_before = held.bytes_received
        log.info("sfu: %s: WebRTC publisher back, the stream continues", grant.public_id)
        return held.stream

    def _session_ender(self, grant: media_api.PublishGrant, stream: Stream):
        """What ends a held stream's session (after the grace, or a staff drop during it)."""
        def end_session(reason: str, received: int) -> None:
            close_soon(self._end_session(grant, normalize_end_reason(reason), received, stream.peak_viewers))

        return end_session

    async def _end_session(self, grant: media_api.PublishGrant, reason: str, received: int, peak: int) -> None:
        try:
            await media_api.publish_ended(session_id=grant.session_id, reason=reason, bytes_received=received,
                                          peak_viewers=peak)
        except Exception:
            log.exception("sfu: publish_ended failed for %s", grant.public_id)

    async def _broadcast_closed(self, session: Session, reason: str) -> None:
        self._closed(session, reason)
        room: RtcRoom = session.room  # type: ignore[attr-defined]
        if room.broadcast is not session:
            return
        grant, room.broadcast, room.grant = room.grant, None, None
        ended = {"closed": "publisher_left", "timeout": "publisher_left"}.get(reason, reason)
        stream = session.stream
        received = session.bytes_before + session.bytes_received
        peak = 0
        # Its peer vanished (no WHIP DELETE, no socket stop): hold the stream for a reconnect.
        if stream is not None and grant is not None and reason == "timeout" and self.registry.hold(
                room.public_id, stream, ended, session_id=grant.session_id, bytes_received=received,
                end_session=self._session_ender(grant, stream)):
            self._forget_room_if_empty(room)
            log.info("sfu: %s WebRTC publisher lost, %d bytes in", room.public_id, received)
            return
        if stream is not None:
            self.registry.end(room.public_id, ended, stream=stream)  # every viewer, any protocol, ends
            peak = stream.peak_viewers
        if grant is not None:
            await self._end_session(grant, ended, received, peak)
        self._forget_room_if_empty(room)
        log.info("sfu: %s WebRTC publisher gone (%s)", room.public_id, reason)

    async def view_start(self, public_id: str, offer: str, client_addr: str = "") -> tuple[SubscriberSession, str]:
        """Play the room's hub stream over WebRTC, whoever publishes it (RTMP or WebRTC).

        A stream the registry holds is a live room's: no database round trip for it.
        """
        stream = self.registry.get(public_id)
        if stream is None or stream.closed:
            if not await media_api.play_authorize(public_id=public_id):
                raise SfuError(404, "room_not_found", "room not found")
            raise SfuError(404, "not_live", "this room is not live now")
        viewers = self.registry.viewers
        try:
            viewer = await viewers.open(public_id, "webrtc", client_addr)
        except PlayRefused as refused:
            raise SfuError(403, refused.reason, refused.message) from None
        try:
            await _first_media(stream)
            watched = playable(stream, WEBRTC)  # AAC as Opus, B-frames re-encoded: once per stream
            session, answer = await subscriber_open(offer, stream_out(watched, self.latency),
                                                    on_closed=self._viewer_closed)
        except BaseException:
            viewers.close(viewer)
            raise
        session.viewer = viewer  # type: ignore[attr-defined]
        viewer.sent = lambda: rtp_bytes_sent(session.pc)
        viewer.drop = lambda: close_soon(session.close("dropped_by_staff"))
        session.notes[:0] = rendition_notes(stream, WEBRTC)
        room = self.room(public_id)
        session.room = room  # type: ignore[attr-defined]
        room.viewers.add(session)
        self._opened(session)
        if stream.closed:  # it ended while we negotiated
            await session.close("publisher_left")
            raise SfuError(404, "not_live", "this room is not live now")
        return session, answer

    async def _viewer_closed(self, session: Session, reason: str) -> None:
        self._closed(session, reason)
        viewer = getattr(session, "viewer", None)
        if viewer is not None:
            self.registry.viewers.close(viewer)
        room: RtcRoom = session.room  # type: ignore[attr-defined]
        room.viewers.discard(session)  # type: ignore[arg-type]
        self._forget_room_if_empty(room)

    async def session_stop(self, session_id: str, kind: str) -> bool:
        session = self.sessions.get(session_id)
        if session is None or session.kind != kind:
            return False
        await session.close("closed")
        return True

    # -- multi-party call: rtc:join / produce / consume / leave -----------------------------------

    async def peer_join(self, public_id: str, user: str, channel_name: str) -> tuple[CallPeer, RtcRoom]:
        room = self.room(public_id)
        if len(room.peers) >= settings.ROOM_MAX_PEERS:
            self.counters["joins_refused_full"] += 1
            self._forget_room_if_empty(room)
            raise SfuError(409, "room_full", f"the room is full ({settings.ROOM_MAX_PEERS} peers at most)")
        peer = CallPeer(peer_id=secrets.token_urlsafe(8), user=user, channel_name=channel_name)
        room.peers[peer.peer_id] = peer
        self.counters["peers_joined"] += 1
        await room_event_send(public_id, "rtc:peerJoined", {"peerId": peer.peer_id, "user": user})
        return peer, room

    async def peer_produce(self, room: RtcRoom, peer: CallPeer, offer: str) -> tuple[PublisherSession, str]:
        if peer.producer is not None:
            raise SfuError(409, "already_producing", "this peer already produces; rtc:leave and join again")

        async def closed(session: Session, reason: str) -> None:
            self._closed(session, reason)
            stream.close("publisher_left")  # its consumers' connections close with it
            if reason == "timeout":  # the producer vanished: the peer is gone
                await self.peer_leave(room, peer, reason)

        session, answer = await publisher_open(offer, on_closed=closed)
        # A peer's stream is a hub stream of its own, outside the registry (calls are not broadcast).
        stream = Stream(f"{room.public_id}/{peer.peer_id}", self.registry.config)
        session.attach(stream)
        peer.producer = session
        self._opened(session)
        await room_event_send(room.public_id, "rtc:newProducer",
                              {"peerId": peer.peer_id, "producerId": session.id, "kinds": sorted(session.codecs)})
        return session, answer

    async def peer_consume(self, room: RtcRoom, peer: CallPeer, producer_peer_id: str,
                           offer: str) -> tuple[SubscriberSession, str]:
        other = room.peers.get(producer_peer_id)
        if other is None or other.producer is None or other.producer.closed:
            raise SfuError(404, "no_producer", "that peer is not in the room or produces nothing")
        if producer_peer_id in peer.consumers:
            await peer.consumers.pop(producer_peer_id).close("replaced")

        async def closed(session: Session, reason: str) -> None:
            self._closed(session, reason)
            if peer.consumers.get(producer_peer_id) is session:
                del peer.consumers[producer_peer_id]
            if reason == "timeout" and peer.peer_id in room.peers:
                await self.peer_leave(room, peer, reason)

        stream = other.producer.stream
        if stream is None or stream.closed:
            raise SfuError(404, "no_producer", "that peer is not in the room or produces nothing")
        session, answer = await subscriber_open(offer, stream_out(stream, self.latency), on_closed=closed)
        peer.consumers[producer_peer_id] = session
        self._opened(session)
        return session, answer

    async def peer_leave(self, room: RtcRoom, peer: CallPeer, reason: str = "left") -> None:
        if room.peers.get(peer.peer_id) is not peer:
            return
        del room.peers[peer.peer_id]
        self.counters["peers_left" if reason != "timeout" else "peers_timed_out"] += 1
        sessions: list[Session] = [*peer.consumers.values()]
        if peer.producer is not None:
            sessions.append(peer.producer)
        for other in room.peers.values():  # nobody consumes a peer that left
            if peer.peer_id in other.consumers:
                sessions.append(other.consumers.pop(peer.peer_id))
        await asyncio.gather(*(s.close("peer_left") for s in sessions), return_exceptions=True)
        await room_event_send(room.public_id, "rtc:peerLeft", {"peerId": peer.peer_id, "reason": reason})
        self._forget_room_if_empty(room)


FIRST_MEDIA_WAIT = 3.0  # s a viewer of a just-started stream waits for its codecs to be known


async def _first_media(stream: Stream) -> None:
    """A stream that went live a moment ago may not have sent its codecs yet: wait a little."""
    try:
        await asyncio.wait_for(stream.tracks_known.wait(), FIRST_MEDIA_WAIT)
    except TimeoutError:
        pass  # the answer then says the stream has nothing WebRTC plays yet


_sfu: Sfu | None = None


def sfu_get() -> Sfu:
    global _sfu
    if _sfu is None:
        _sfu = Sfu()
    return _sfu
