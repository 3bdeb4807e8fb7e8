"""Peer connections in their SFU roles: a publisher (a hub source) or a subscriber (a hub reader).

Each is one aiortc RTCPeerConnection (BUNDLE: one ICE/DTLS transport) made from the client's offer;
the server always answers and never offers, so there is no glare and no renegotiation. A publisher's
frames go into a hub stream (`sfu/to_hub.py`); a subscriber plays any hub stream, whoever publishes
it (`sfu/from_hub.py`).
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import secrets
from collections.abc import Awaitable, Callable

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import candidate_from_sdp, parse_h264_profile_level_id
from django.conf import settings

from media.hub.stream import Stream

from .aiortc_hooks import (
    codec_capabilities,
    common_codecs,
    negotiated_codec,
    receiver_forward,
    receiver_on_sender_report,
    receiver_request_keyframe,
    sender_forward,
    sender_route_keyframe,
)
from .from_hub import StreamOut, SubscriberTrack, TrackOut
from .keyframe import KeyframeThrottle
from .sdp import SfuError, codec_choose, offer_parse
from .to_hub import WebRtcSource

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
            # A fresh context: the request that made this session (its thread executor) is long gone.
            loop = asyncio.get_running_loop()
            self._close_task = loop.create_task(self.close("timeout"), context=contextvars.Context())

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
    """Receives a client's media into a hub stream (`attach` it once the stream is open)."""

    kind = "publisher"

    def __init__(self, pc: RTCPeerConnection, on_closed: Closed | None = None) -> None:
        super().__init__(pc, on_closed)
        self._throttles: list[KeyframeThrottle] = []
        self.source = WebRtcSource(self._request_keyframe)
        self.codecs: dict[str, str] = {}  # kind -> negotiated mime type
        self.bytes_before = 0  # received by the earlier publishes of a resumed stream (reconnect grace)

    def _request_keyframe(self) -> None:
        for throttle in self._throttles:
            throttle.request()

    @property
    def stream(self) -> Stream | None:
        return self.source.stream

    def attach(self, stream: Stream) -> None:
        self.source.attach(stream)

    @property
    def bytes_received(self) -> int:
        return self.source.bytes_received

    def _release(self) -> None:
        self.source.close()
        for throttle in self._throttles:
            throttle.close()


class SubscriberSession(Session):
    """Sends one hub stream's media to a client, packetized per stream, never re-encoded."""

    kind = "subscriber"

    def __init__(self, pc: RTCPeerConnection, source: StreamOut, on_closed: Closed | None = None) -> None:
        super().__init__(pc, on_closed)
        self.source = source
        self.tracks: list[SubscriberTrack] = []
        # What this viewer does not get as the stream has it (a track WebRTC cannot carry, a label).
        self.notes: list[str] = []

    def on_connected(self) -> None:
        for track in self.tracks:
            if track.need_keyframe:
                track.request_keyframe()

    def _release(self) -> None:
        self.source.sessions.discard(self)
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


def _attach_source(session: PublisherSession, transceiver) -> None:
    receiver = transceiver.receiver
    codec = negotiated_codec(transceiver)
    buffer = None

    def send_pli() -> None:
        if buffer is not None and buffer.ssrc is not None and not session.closed:
            asyncio.ensure_future(receiver_request_keyframe(receiver, buffer.ssrc))

    track = session.source.track(transceiver.kind, codec.mimeType.split("/")[1], codec.clockRate)
    if transceiver.kind == "video":
        session._throttles.append(KeyframeThrottle(send_pli, interval=settings.RTC_KEYFRAME_INTERVAL))
    buffer = receiver_forward(receiver, track.on_frame, codec.mimeType.split("/")[1])
    receiver_on_sender_report(receiver, track.sender_report)
    session.codecs[transceiver.kind] = codec.mimeType


async def publisher_open(offer_text: str, *, on_closed: Closed | None = None) -> tuple[PublisherSession, str]:
    """Answer a publisher's offer; frames flow into the hub stream given to `session.attach`."""
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
            if transceiver.mid is None or negotiated_codec(transceiver) is None:
                continue
            _attach_source(session, transceiver)
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


def _real_profile(answer: str, codec: RTCRtpCodecParameters, want: RTCRtpCodecParameters) -> str:
    """Put the stream's own profile-level-id (its SPS's level too) in the answer's fmtp line."""
    chosen = codec.parameters.get("profile-level-id")
    real = want.parameters.get("profile-level-id")
    if not chosen or not real or chosen == real or _h264_profile(codec) != _h264_profile(want):
        return answer
    return re.sub(rf"(a=fmtp:{codec.payloadType} [^\r\n]*profile-level-id=){chosen}", rf"\g<1>{real}", answer)


def _answer_codec(out: TrackOut, media) -> tuple[RTCRtpCodecParameters, str]:
    """The offer's codec to send `out` as, and a note when it is not the stream's own label.

    H.264: the offer's entry of the stream's profile (from its SPS); else Constrained Baseline,
    which every browser offers and whose decoder plays Main and High streams without B-frames too
    (the anchors all do this); else the offer lacks H.264 with packetization-mode 1: refused.
    """
    want = out.codec
    offered = [c for c in common_codecs(media.kind, media.rtp.codecs) if c.mimeType.lower() == want.mimeType.lower()]
    if want.mimeType.lower() != "video/h264":
        if offered:
            return offered[0], ""
    else:
        profile = want.parameters["profile-level-id"]
        candidates = [c for c in offered if str(c.parameters.get("packetization-mode")) == "1"]
        for codec in candidates:
            if _h264_profile(codec) == _h264_profile(want):
                return codec, ""
        for codec in candidates:
            if str(codec.parameters.get("profile-level-id")).lower() == "42e01f":
                return codec, f"H.264 profile-level-id {profile} sent labelled 42e01f (the offer lacks {profile})"
    raise SfuError(400, "no_usable_codec",
                   f"the stream's {media.kind} is {_describe(want)}, which the offer lacks")


def _h264_profile(codec: RTCRtpCodecParameters):
    try:
        return parse_h264_profile_level_id(str(codec.parameters.get("profile-level-id", "42e01f")))[0]
    except ValueError:
        return None


def _describe(codec: RTCRtpCodecParameters) -> str:
    profile = codec.parameters.get("profile-level-id")
    return f"{codec.mimeType} (profile-level-id {profile}, packetization-mode 1)" if profile else codec.mimeType


async def subscriber_open(offer_text: str, source: StreamOut, *,
                          on_closed: Closed | None = None) -> tuple[SubscriberSession, str]:
    """Answer a subscriber's (recvonly) offer with the tracks of `source`'s stream."""
    offer = offer_parse(offer_text, sending=False)
    pc = _peer_connection()
    session = SubscriberSession(pc, source, on_closed)
    try:
        chosen = []
        for kind, codec_name in source.missing().items():
            session.notes.append(f"{kind} {codec_name} does not play over WebRTC yet (it needs transcoding): "
                                 f"play HLS or HTTP-FLV for it")
        for media in offer.media:
            out = source.track(media.kind)
            if out is None or out.ended:
                continue
            codec, label = _answer_codec(out, media)
            chosen.append((codec, out.codec))
            if label:
                session.notes.append(label)
                log.info("sfu: %s viewer: %s", source.stream.public_id, label)
            track = out.subscribe()
            session.tracks.append(track)
            transceiver = pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(codec_capabilities(codec))
            sender_route_keyframe(transceiver.sender, track.request_keyframe)
            sender_forward(transceiver.sender, track.attach)
        if not session.tracks:
            have = ", ".join(f"{k} {c}" for k, c in source.stream.tracks().items()) or "nothing yet"
            raise SfuError(400, "no_usable_media",
                           f"nothing in this stream plays over WebRTC without transcoding (it has {have})")
        answer = await _negotiate(session, offer_text, "play")
        for codec, want in chosen:
            answer = _real_profile(answer, codec, want)
    except SfuError:
        await session.abort()
        raise
    source.sessions.add(session)
    return session, answer
