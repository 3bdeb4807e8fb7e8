"""REST API under /api/v1: thin views that parse, call a service or selector, and serialize."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.tokens import RefreshToken

from . import recordings, selectors, services
from .envelope import ok
from .models import Room
from .play_urls import room_ingest, room_push_urls
from .serializers import (
    RecordingOutput,
    RegisterInput,
    RoomCreateInput,
    RoomOutput,
    RoomOwnerOutput,
    RoomUpdateInput,
    RoomWithKeyOutput,
    UserOutput,
)


def _envelope(name: str, data: serializers.Field) -> serializers.Serializer:
    return inline_serializer(name, {"code": serializers.IntegerField(), "message": serializers.CharField(),
                                    "data": data})


def _tokens_for(user) -> dict[str, str]:
    refresh = RefreshToken.for_user(user)
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def _room_with_key(room: Room, stream_key: str) -> dict:
    return RoomWithKeyOutput({"room": room, "stream_key": stream_key,
                              "push_urls": room_push_urls(room, stream_key)}).data


def _owned_room(request: Request, public_id: str) -> Room:
    room = selectors.room_get_by_public_id(public_id=public_id)
    if room is None:
        raise NotFound("room not found")
    if room.owner_id != request.user.pk and not request.user.is_staff:
        raise PermissionDenied("this room belongs to someone else")
    return room


class PublicAuthApi(APIView):
    """Auth endpoints take no token; a failed login still answers 401 with a Bearer challenge."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    def get_authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class RegisterApi(PublicAuthApi):

    @extend_schema(request=RegisterInput, responses={201: _envelope("Registered", UserOutput())})
    def post(self, request: Request) -> Response:
        data = RegisterInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = get_user_model().objects.create_user(**data.validated_data)
        return ok({"user": UserOutput(user).data, **_tokens_for(user)}, http_status=status.HTTP_201_CREATED)


class LoginApi(PublicAuthApi):

    @extend_schema(request=TokenObtainPairSerializer, responses={200: _envelope("Tokens", serializers.DictField())})
    def post(self, request: Request) -> Response:
        data = TokenObtainPairSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return ok({"user": UserOutput(data.user).data, **data.validated_data})


class RefreshApi(PublicAuthApi):

    @extend_schema(request=TokenRefreshSerializer, responses={200: _envelope("Refreshed", serializers.DictField())})
    def post(self, request: Request) -> Response:
        data = TokenRefreshSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return ok(data.validated_data)


class RoomCreateApi(APIView):
    @extend_schema(request=RoomCreateInput, responses={201: _envelope("RoomCreated", RoomWithKeyOutput())})
    def post(self, request: Request) -> Response:
        data = RoomCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        room, stream_key = services.room_create(owner=request.user, **data.validated_data)
        return ok(_room_with_key(room, stream_key), http_status=status.HTTP_201_CREATED)


class RoomLiveListApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: _envelope("LiveRooms", RoomOutput(many=True))})
    def get(self, request: Request) -> Response:
        rooms = selectors.room_list_live()[:100]
        return ok(RoomOutput(rooms, many=True).data)


class RoomMineApi(APIView):
    @extend_schema(responses={200: _envelope("MyRooms", RoomOwnerOutput(many=True))})
    def get(self, request: Request) -> Response:
        return ok(RoomOwnerOutput(selectors.room_list_owned(owner=request.user), many=True).data)


class RoomDetailApi(APIView):
    def get_permissions(self) -> list:
        return [AllowAny()] if self.request.method == "GET" else super().get_permissions()

    @extend_schema(responses={200: _envelope("Room", RoomOutput())},
                   description="The owner (with a token) also gets `call_invitees`.")
    def get(self, request: Request, public_id: str) -> Response:
        room = selectors.room_get_by_public_id(public_id=public_id)
        if room is None:
            raise NotFound("room not found")
        is_owner = request.user is not None and request.user.pk == room.owner_id
        data = (RoomOwnerOutput if is_owner else RoomOutput)(room).data
        if room.is_live:
            # What the media node says the stream carries, and what does not play where (e.g. AAC
            # over WebRTC before the transcoding bridge).
            data["media"] = selectors.stream_media_get(public_id=public_id)
        return ok(data)

    @extend_schema(request=RoomUpdateInput, responses={200: _envelope("RoomUpdated", RoomOwnerOutput())},
                   description="Who may join the room's call. Only the owner may change it.")
    def patch(self, request: Request, public_id: str) -> Response:
        room = selectors.room_get_by_public_id(public_id=public_id)
        if room is None:
            raise NotFound("room not found")
        if room.owner_id != request.user.pk:  # checked before the input, so usernames are not probed here
            raise PermissionDenied("only the room's owner may change its settings")
        data = RoomUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        call = {k: fields[k] for k in ("call_access", "call_invitees") if k in fields}
        if call:
            room = services.room_call_access_update(room=room, **call)
        if "recording" in fields or "recordings_public" in fields:
            room = services.room_recording_update(room=room, recording=fields.get("recording"),
                                                  public=fields.get("recordings_public"))
        return ok(RoomOwnerOutput(room).data)

    @extend_schema(responses={200: _envelope("RoomDeleted", serializers.DictField())})
    def delete(self, request: Request, public_id: str) -> Response:
        room = _owned_room(request, public_id)
        services.room_delete(room=room)
        return ok({"room_id": public_id, "deleted": True})


class RoomRotateKeyApi(APIView):
    @extend_schema(request=None, responses={200: _envelope("KeyRotated", RoomWithKeyOutput())})
    def post(self, request: Request, public_id: str) -> Response:
        room = _owned_room(request, public_id)
        stream_key = services.stream_key_rotate(room=room)
        room.refresh_from_db()
        return ok(_room_with_key(room, stream_key))


class RoomIngestApi(APIView):
    @extend_schema(responses={200: _envelope("Ingest", serializers.DictField())},
                   description="Where the room's next publish should go (the owner's; the key is not shown): "
                               "`rtmp_server` of the media node the room is allocated to (the node that holds it "
                               "while live), `node`, and the `whip` URL (the web host sends WHIP on to the node).")
    def get(self, request: Request, public_id: str) -> Response:
        return ok(room_ingest(_owned_room(request, public_id)))


class RoomEndLiveApi(APIView):
    @extend_schema(request=None, responses={200: _envelope("LiveEnded", serializers.DictField())})
    def post(self, request: Request, public_id: str) -> Response:
        room = _owned_room(request, public_id)
        was_live = services.room_end_live(room=room)
        return ok({"room_id": public_id, "was_live": was_live})


def _recordings_room(request: Request, public_id: str) -> Room:
    room = selectors.room_get_by_public_id(public_id=public_id)
    if room is None:
        raise NotFound("room not found")
    mine = request.user is not None and (request.user.pk == room.owner_id or request.user.is_staff)
    if not (mine or room.recordings_public):
        raise PermissionDenied("this room's recordings are its owner's")
    return room


class RoomRecordingsApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: _envelope("Recordings", RecordingOutput(many=True))},
                   description="The room's recordings, newest first: its owner's and staff's, anyone's when "
                               "the room has `recordings_public`. `url` and `thumbnail_url` are signed links "
                               "(valid RECORDING_URL_TTL s) that answer Range requests.")
    def get(self, request: Request, public_id: str) -> Response:
        room = _recordings_room(request, public_id)
        recordings = selectors.recording_list(room=room)
        return ok(RecordingOutput(recordings, many=True, context={"request": request}).data)


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class RoomRecordingControlApi(APIView):
    """Staff: `start` records the live room now (a new recording, whatever its `recording` says),
    `stop` ends its running recording, which is then finalized as any other."""

    permission_classes = [IsAdminUser]

    @extend_schema(request=None, responses={202: _envelope("RecordingControl", serializers.DictField())})
    def post(self, request: Request, public_id: str, action: str) -> Response:
        room = selectors.room_get_by_public_id(public_id=public_id)
        if room is None:
            raise NotFound("room not found")
        request_action = recordings.recording_start_request if action == "start" else recordings.recording_stop_request
        try:
            request_action(room=room)
        except recordings.RecordingConflict as exc:
            raise Conflict(str(exc)) from exc
        return ok({"room_id": public_id, "recording": "starting" if action == "start" else "stopping"},
                  http_status=status.HTTP_202_ACCEPTED)


class StatApi(APIView):
    """Staff: every media node's live streams (publisher, codecs, size, fps, bitrate in, uptime,
    viewers per protocol and each viewer's id, address, protocol and bytes sent) and totals, as
    the nodes last reported them (once a second)."""

    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: _envelope("Stat", serializers.DictField())})
    def get(self, request: Request) -> Response:
        nodes = selectors.node_stats()
        streams = [{"node": n["node"], **s} for n in nodes for s in n["streams"]]
        totals = {key: sum(n["totals"][key] for n in nodes) for key in ("streams", "viewers", "bytes_in", "bytes_out")}
        return ok({"nodes": [{"node": n["node"], "uptime": n["uptime"], **n["totals"]} for n in nodes],
                   "streams": streams, "totals": {**totals, "nodes": len(nodes)}})


class ViewerDropApi(APIView):
    """Staff: close one viewer (an id from /api/v1/stat) on the node that serves it."""

    permission_classes = [IsAdminUser]

    @extend_schema(request=None, responses={202: _envelope("ViewerDropped", serializers.DictField())})
    def post(self, request: Request, viewer_id: str) -> Response:
        if not services.viewer_drop(viewer_id=viewer_id):
            raise NotFound("no such viewer is watching now")
        return ok({"viewer_id": viewer_id, "dropping": True}, http_status=status.HTTP_202_ACCEPTED)


class RecordingApi(APIView):
    @extend_schema(responses={200: _envelope("RecordingDeleted", serializers.DictField())})
    def delete(self, request: Request, recording_id: str) -> Response:
        recording = selectors.recording_get(public_id=recording_id)
        if recording is None:
            raise NotFound("recording not found")
        if recording.room.owner_id != request.user.pk and not request.user.is_staff:
            raise PermissionDenied("this recording belongs to someone else")
        recordings.recording_delete(recording=recording)
        return ok({"id": recording_id, "deleted": True})
