"""WHIP (RFC 9725) to publish and WHEP to play: SDP offer in, 201 + SDP answer + Location out.

POST   /whip/{public_id}          Authorization: Bearer {stream_key}; publishes the room live
POST   /whep/{public_id}          plays the room's WebRTC publisher
DELETE /whip|whep/{public_id}/{session}   stops (the session id is an unguessable capability)
PATCH  /whip|whep/{public_id}/{session}   trickle ICE (application/trickle-ice-sdpfrag): 204;
                                          ICE restarts are not supported: 422
OPTIONS on all of them: CORS preflight, Accept-Post / Accept-Patch.
Also GET /api/v1/rtc/ice-servers (ICE servers for clients) and GET /api/v1/rtc/stats (counts).
"""
from __future__ import annotations

import json

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from live import media_api

from .ice import ice_servers, link_headers
from .rooms import sfu_get
from .sdp import SfuError

SDP = "application/sdp"
TRICKLE = "application/trickle-ice-sdpfrag"


def _cors(response: HttpResponse, methods: str) -> HttpResponse:
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Allow-Methods"] = methods
    response["Access-Control-Allow-Headers"] = "Authorization, Content-Type, If-Match"
    response["Access-Control-Expose-Headers"] = "Location, Link, ETag, Accept-Patch, X-Stream-Notes"
    return response


def _error(error: SfuError, methods: str) -> HttpResponse:
    response = JsonResponse({"code": error.code, "message": error.message}, status=error.status)
    if error.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="whip"'
    return _cors(response, methods)


def _media_type(request: HttpRequest) -> str:
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower()


def _offer(request: HttpRequest) -> str:
    if _media_type(request) != SDP:
        raise SfuError(415, "bad_content_type", "send the offer as Content-Type: application/sdp")
    try:
        return request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise SfuError(400, "bad_sdp", "the SDP offer is not UTF-8") from None


def _created(kind: str, public_id: str, session_id: str, answer: str, notes: list[str]) -> HttpResponse:
    response = HttpResponse(answer, status=201, content_type=SDP)
    # Behind nginx a node's resources live under its own base (its PATCH/DELETE must reach it).
    response["Location"] = f"{settings.MEDIA_PUBLIC_HTTP}/{kind}/{public_id}/{session_id}"
    response["ETag"] = f'"{session_id}"'
    response["Accept-Patch"] = TRICKLE
    links = link_headers(ice_servers())
    if links:
        response["Link"] = ", ".join(links)
    if notes:  # what this viewer does not get as the stream has it (e.g. AAC audio over WebRTC)
        response["X-Stream-Notes"] = "; ".join(notes)
    return _cors(response, "POST, OPTIONS")


def _preflight(methods: str) -> HttpResponse:
    response = _cors(HttpResponse(status=204), methods)
    if "POST" in methods:
        response["Accept-Post"] = SDP
    else:
        response["Accept-Patch"] = TRICKLE
    return response


def client_addr(request: HttpRequest) -> str:
    host, port = request.META.get("REMOTE_ADDR", ""), request.META.get("REMOTE_PORT", "")
    return f"{host}:{port}" if port else host


def _bearer(request: HttpRequest) -> str:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _offer_view(request: HttpRequest, kind: str, public_id: str, start) -> HttpResponse:
    """WHIP and WHEP alike: POST an SDP offer, get 201 + answer + Location; `start(offer)` opens
    the session."""
    methods = "POST, OPTIONS"
    if request.method == "OPTIONS":
        return _preflight(methods)
    if request.method != "POST":
        return _error(SfuError(405, "method_not_allowed", "POST an SDP offer"), methods)
    try:
        here = sfu_get().registry.get(public_id) is not None
        target = await media_api.offer_route(kind=kind, public_id=public_id, here=here)
    except media_api.NoMediaNode as exc:
        return _error(SfuError(503, "no_media_node", str(exc)), methods)
    if target is not None:
        # 307 keeps the method and body (a 302 turns fetch's POST into a GET); WHIP names 307.
        response = _cors(HttpResponse(status=307), methods)
        response["Location"] = target
        return response
    try:
        session, answer = await start(_offer(request))
    except SfuError as error:
        return _error(error, methods)
    return _created(kind, public_id, session.id, answer, getattr(session, "notes", []))


@csrf_exempt
async def whip(request: HttpRequest, public_id: str) -> HttpResponse:
    return await _offer_view(request, "whip", public_id,
                             lambda offer: sfu_get().broadcast_start(public_id, _bearer(request), offer,
                                                                     client_addr=client_addr(request)))


@csrf_exempt
async def whep(request: HttpRequest, public_id: str) -> HttpResponse:
    return await _offer_view(request, "whep", public_id,
                             lambda offer: sfu_get().view_start(public_id, offer, client_addr=client_addr(request)))


async def _resource(request: HttpRequest, kind: str, session_id: str) -> HttpResponse:
    methods = "PATCH, DELETE, OPTIONS"
    if request.method == "OPTIONS":
        return _preflight(methods)
    sfu = sfu_get()
    session = sfu.sessions.get(session_id)
    if session is None or session.kind != kind:
        return _error(SfuError(404, "no_session", "no such session (already stopped?)"), methods)
    if request.method == "DELETE":
        await session.close("closed")
        return _cors(HttpResponse(status=200), methods)
    if request.method != "PATCH":
        return _error(SfuError(405, "method_not_allowed", "PATCH trickle candidates or DELETE"), methods)
    if _media_type(request) != TRICKLE:
        return _error(SfuError(415, "bad_content_type", f"PATCH with Content-Type: {TRICKLE}"), methods)
    match = request.headers.get("If-Match")
    if match and match not in ("*", f'"{session_id}"'):
        return _error(SfuError(412, "etag_mismatch", "If-Match does not name this ICE session"), methods)
    fragment = request.body.decode("utf-8", "replace").splitlines()
    ufrag = [line.split(":", 1)[1].strip() for line in fragment if line.startswith("a=ice-ufrag:")]
    remote = session.pc.remoteDescription
    if ufrag and remote is not None and f"a=ice-ufrag:{ufrag[0]}" not in remote.sdp:
        return _error(SfuError(422, "ice_restart_unsupported", "ICE restarts are not supported; POST again"),
                      methods)
    mids = [line.split(":", 1)[1].strip() for line in fragment if line.startswith("a=mid:")]
    try:
        await session.add_candidates(fragment, mids[0] if mids else None)
    except SfuError as error:
        return _error(error, methods)
    return _cors(HttpResponse(status=204), methods)


@csrf_exempt
async def whip_resource(request: HttpRequest, public_id: str, session_id: str) -> HttpResponse:
    return await _resource(request, "publisher", session_id)


@csrf_exempt
async def whep_resource(request: HttpRequest, public_id: str, session_id: str) -> HttpResponse:
    return await _resource(request, "subscriber", session_id)


async def ice_servers_view(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    name = user.username if user.is_authenticated else "anonymous"
    return JsonResponse({"code": 0, "message": "success", "data": {"iceServers": ice_servers(name)}})


async def stats_view(request: HttpRequest) -> HttpResponse:
    data = sfu_get().stats()
    data["max_peers"] = settings.ROOM_MAX_PEERS
    return HttpResponse(json.dumps({"code": 0, "message": "success", "data": data}), content_type="application/json")
