"""Peer connections in their SFU roles: a publisher (frames in) or a subscriber (frames out).

Each is one aiortc RTCPeerConnection (BUNDLE: one ICE/DTLS transport) made from the client's offer;
the server always answers and never offers, so there is no glare and no renegotiation.
"""
from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp
from django.conf import settings

from .aiortc_hooks import (
    codec_capabilities,
    receiver_forward,
    receiver_request_keyframe,
    sender_forward,
    sender_route_keyframe,
)
from .forwarder import SubscriberTrack, TrackForwarder
from .keyframe import KeyframeThrottle
from .sdp import SfuError, codec_choose, offer_parse
from .stats import Samples

log = logging.getLogger(__name__)

Closed = Callable[["Session", str], Awaitable[None]]


def _peer_connection() -> RTCPeerConnection:
    # No ICE servers on the server side: it is reached on its own (announced) addresses.
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def announce(answer: str) -> str:
    """Show RTC_ANNOUNCED_IP instead of the listen address in candidates (1:1 NAT, containers)."""
    announced = settings.RTC_ANNOUNCED_IP
    if not announced:
        return answer
    for listen in settings.RTC_LISTEN_IPS:
        if listen != announced:
            answer = re.sub(rf"(a=candidate:\S+ \d+ \S+ \d+ ){re.escape(listen)}( \d+ typ host)",
                            rf"\g<1>{announced}\g<2>", answer)
            answer = answer.replace(f"c=IN IP4 {listen}\r\n", f"c=IN IP4 {announced}\r\n")
    return answer


class Session:
    kind = "session"

    def __init__(self, pc: RTCPeerConnection, on_closed: Closed | None = None) -> None:
        self.id = secrets.token_urlsafe(16)
        self.pc = pc
        self.closed = False
        self.close_reason = ""
        self.connected = asyncio.Event()
        self._on_closed = on_closed
        self._close_task: asyncio.Task | None = None
        pc.on("connectionstatechange", self._state_changed)

    def _state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.connected.set()
            self.on_connected()
        elif state in ("failed", "closed") and not self.closed:
            # ICE consent expired or DTLS closed: the peer vanished without saying goodbye.
            self._close_task = asyncio.ensure_future(self.close("timeout"))

    def on_connected(self) -> None:
        pass

    async def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._release()
        try:
            await self.pc.close()
        except Exception:
            log.exception("sfu: closing a peer connection failed")
        if self._on_closed is not None:
            await self._on_closed(self, reason)

    def _release(self) -> None:
        pass

    async def abort(self) -> None:
        """Close a session that never got registered (its offer was refused)."""
        self._on_closed = None
        await self.close("error")

    async def add_candidates(self, lines: list[str], mid: str | None = None) -> int:
        """Trickled remote candidates (`candidate:...` or `a=candidate:...`)."""
        added = 0
        transceivers = self.pc.getTransceivers()
        for line in lines:
            text = line.strip().removeprefix("a=")
            if not text.startswith("candidate:"):
                continue
            try:
                candidate = candidate_from_sdp(text.removeprefix("candidate:"))
            except (ValueError, IndexError):
                raise SfuError(400, "bad_candidate", "malformed ICE candidate") from None
            candidate.sdpMid = mid or (transceivers[0].mid if transceivers else None)
            candidate.sdpMLineIndex = 0
            await self.pc.addIceCandidate(candidate)
            added += 1
        return added


class PublisherSession(Session):
    """Receives a client's media; one TrackForwarder per track fans it out."""

    kind = "publisher"

    def __init__(self, pc: RTCPeerConnection, on_closed: Closed | None = None) -> None:
        super().__init__(pc, on_closed)
        self.forwarders: dict[str, TrackForwarder] = {}
        self._throttles: list[KeyframeThrottle] = []

    @property
    def bytes_received(self) -> int:
        return sum(f.bytes for f in self.forwarders.values())

    @property
    def codecs(self) -> dict[str, str]:
        return {kind: f.codec.mimeType for kind, f in self.forwarders.items()}

    def _release(self) -> None:
        for throttle in self._throttles:
            throttle.close()
        for forwarder in self.forwarders.values():
            forwarder.end()


class SubscriberSession(Session):
    """Sends one publisher's media to a client, packetized per subscriber, never re-encoded."""

    kind = "subscriber"

    def __init__(self, pc: RTCPeerConnection, source: PublisherSession, on_closed: Closed | None = None) -> None:
        super().__init__(pc, on_closed)
        self.source = source
        self.tracks: list[SubscriberTrack] = []

    def on_connected(self) -> None:
        for track in self.tracks:
            if track.need_keyframe:
                track.request_keyframe()

    def _release(self) -> None:
        for track in self.tracks:
            track.source.unsubscribe(track)


async def _negotiate(session: Session, offer_text: str, what: str) -> str:
    pc = session.pc
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_text, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except SfuError:
        raise
    except Exception as exc:
        log.info("sfu: %s offer refused: %r", what, exc)
        raise SfuError(400, "no_usable_codec" if "parameters" in str(exc) else "bad_sdp",
                       f"the {what} offer could not be negotiated") from None
    return announce(pc.localDescription.sdp)


def _attach_forwarder(session: PublisherSession, transceiver, latency: Samples | None) -> None:
    receiver = transceiver.receiver
    buffer = None

    def send_pli() -> None:
        if buffer is not None and buffer.ssrc is not None and not session.closed:
            asyncio.ensure_future(receiver_request_keyframe(receiver, buffer.ssrc))

    throttle = KeyframeThrottle(send_pli, interval=settings.RTC_KEYFRAME_INTERVAL)
    forwarder = TrackForwarder(transceiver.kind, transceiver._codecs[0], throttle.request, latency)
    buffer = receiver_forward(receiver, forwarder.on_frame)
    session.forwarders[transceiver.kind] = forwarder
    session._throttles.append(throttle)


async def publisher_open(offer_text: str, *, on_closed: Closed | None = None,
                         latency: Samples | None = None) -> tuple[PublisherSession, str]:
    """Answer a publisher's offer; frames then flow into `session.forwarders`."""
    offer = offer_parse(offer_text, sending=True)
    preference = {"video": settings.RTC_VIDEO_CODECS, "audio": settings.RTC_AUDIO_CODECS}
    chosen = {m.kind: codec_choose(m, preference[m.kind]) for m in offer.media if m.kind in preference}
    pc = _peer_connection()
    session = PublisherSession(pc, on_closed)
    try:
        for kind, codec in chosen.items():
            pc.addTransceiver(kind, direction="recvonly").setCodecPreferences(codec_capabilities(codec))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_text, type="offer"))
        for transceiver in pc.getTransceivers():
            if transceiver.mid is None or not transceiver._codecs:
                continue
            _attach_forwarder(session, transceiver, latency)
        await pc.setLocalDescription(await pc.createAnswer())
        answer = announce(pc.localDescription.sdp)
    except SfuError:
        await session.abort()
        raise
    except Exception as exc:
        log.info("sfu: publish offer refused: %r", exc)
        await session.abort()
        raise SfuError(400, "bad_sdp", "the publish offer could not be negotiated") from None
    return session, answer


async def subscriber_open(offer_text: str, source: PublisherSession, *,
                          on_closed: Closed | None = None) -> tuple[SubscriberSession, str]:
    """Answer a subscriber's (recvonly) offer with `source`'s tracks, in the publisher's codecs."""
    offer = offer_parse(offer_text, sending=False)
    pc = _peer_connection()
    session = SubscriberSession(pc, source, on_closed)
    try:
        for media in offer.media:
            forwarder = source.forwarders.get(media.kind)
            if forwarder is None or forwarder.ended:
                continue
            wanted = codec_capabilities(forwarder.codec)
            if not any(c.mimeType.lower() == wanted[0].mimeType.lower() for c in media.rtp.codecs):
                raise SfuError(400, "no_usable_codec",
                               f"the stream's {media.kind} is {forwarder.codec.mimeType}, which the offer lacks")
            track = forwarder.subscribe()
            session.tracks.append(track)
            transceiver = pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(wanted)
            sender_route_keyframe(transceiver.sender, track.request_keyframe)
            sender_forward(transceiver.sender, track.attach)
        if not session.tracks:
            have = ", ".join(sorted(source.forwarders)) or "nothing"
            raise SfuError(400, "no_usable_media", f"the offer asks for no track this stream has ({have})")
        answer = await _negotiate(session, offer_text, "play")
    except SfuError:
        await session.abort()
        raise
    return session, answer
