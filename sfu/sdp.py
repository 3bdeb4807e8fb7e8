"""Offer checks before aiortc sees them: bad input becomes a clear 400, never a traceback."""
from __future__ import annotations

from aiortc import sdp as aiortc_sdp
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from .aiortc_hooks import common_codecs

MAX_SDP = 64 * 1024


class SfuError(Exception):
    """A refusal with an HTTP status, a short code and a message safe to show the client."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def offer_parse(text: object, *, sending: bool) -> aiortc_sdp.SessionDescription:
    """Parse and check an offer. `sending`: the client publishes (else it receives)."""
    if not isinstance(text, str) or not text.strip():
        raise SfuError(400, "bad_sdp", "the body must be an SDP offer (Content-Type: application/sdp)")
    if len(text) > MAX_SDP:
        raise SfuError(400, "bad_sdp", "the SDP offer is too large")
    if not text.lstrip().startswith("v=0"):
        raise SfuError(400, "bad_sdp", "malformed SDP: it must start with v=0")
    try:
        offer = aiortc_sdp.SessionDescription.parse(text)
    except Exception:
        raise SfuError(400, "bad_sdp", "malformed SDP offer") from None
    media = [m for m in offer.media if m.kind in ("audio", "video")]
    if not media:
        raise SfuError(400, "no_media", "the offer has no audio or video section")
    kinds = [m.kind for m in media]
    if len(set(kinds)) != len(kinds):
        raise SfuError(400, "too_many_tracks", "send at most one audio and one video section")
    wanted = ("sendonly", "sendrecv") if sending else ("recvonly", "sendrecv")
    for m in media:
        if not (m.ice and m.ice.usernameFragment and m.ice.password):
            raise SfuError(400, "bad_sdp", f"the {m.kind} section has no ICE credentials")
        if not (m.dtls and m.dtls.fingerprints):
            raise SfuError(400, "bad_sdp", f"the {m.kind} section has no DTLS fingerprint")
        if m.direction not in wanted:
            verb = "send" if sending else "receive"
            raise SfuError(400, "bad_direction", f"the {m.kind} section must {verb} ({' or '.join(wanted)})")
    return offer


def codec_choose(media: aiortc_sdp.MediaDescription, preference: list[str]) -> RTCRtpCodecParameters:
    """The codec the publisher will send: the first of `preference` (names) both sides support."""
    common = common_codecs(media.kind, media.rtp.codecs)
    for name in preference:
        for codec in common:
            if codec.mimeType.split("/")[1].lower() == name.lower():
                return codec
    offered = sorted({c.mimeType.split("/")[1] for c in media.rtp.codecs if not c.mimeType.endswith("/rtx")})
    raise SfuError(400, "no_usable_codec",
                   f"no usable {media.kind} codec: offered {', '.join(offered) or 'none'}, "
                   f"this server forwards {', '.join(preference)}")
