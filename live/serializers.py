"""Input and output shapes of the REST API."""
from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from . import selectors
from .models import CallAccess, PushProtocol, Recording, Room
from .play_urls import room_play_urls

MAX_CALL_INVITEES = 500


class RegisterInput(serializers.Serializer):
    username = serializers.RegexField(r"^[\w.@+-]{3,150}$", max_length=150)
    password = serializers.CharField(min_length=8, max_length=128, write_only=True)
    email = serializers.EmailField(required=False, allow_blank=True, default="")

    def validate_username(self, value: str) -> str:
        if get_user_model().objects.filter(username__iexact=value).exists():
            raise serializers.ValidationError("this username is taken")
        return value

    def validate_password(self, value: str) -> str:
        password_validation.validate_password(value)
        return value


class UserOutput(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.CharField()


class CallInviteesField(serializers.ListField):
    """A list of usernames in, the users out; an unknown username is a 400 naming the field."""

    def __init__(self, **kwargs) -> None:
        super().__init__(child=serializers.CharField(max_length=150), max_length=MAX_CALL_INVITEES, **kwargs)

    def to_internal_value(self, data) -> list:
        users, unknown = selectors.users_get_by_usernames(usernames=super().to_internal_value(data))
        if unknown:
            raise serializers.ValidationError(f"unknown username(s): {', '.join(unknown[:10])}")
        return users


_CALL_ACCESS_HELP = ("who may join the room's call: owner (only the owner), invited (the owner and "
                     "call_invitees), users (any logged-in user)")


class RoomCreateInput(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    push_protocol = serializers.ChoiceField(choices=PushProtocol.choices, default=PushProtocol.RTMP)
    recording = serializers.BooleanField(default=lambda: settings.RECORDING_DEFAULT)
    call_access = serializers.ChoiceField(choices=CallAccess.choices, default=CallAccess.INVITED,
                                          help_text=_CALL_ACCESS_HELP)
    call_invitees = CallInviteesField(required=False, help_text="usernames")


class RoomUpdateInput(serializers.Serializer):
    """PATCH /api/v1/live/{room_id}: any of these; `call_invitees` replaces the whole list."""

    call_access = serializers.ChoiceField(choices=CallAccess.choices, required=False, help_text=_CALL_ACCESS_HELP)
    call_invitees = CallInviteesField(required=False, help_text="usernames; replaces the list")
    recording = serializers.BooleanField(required=False, help_text="record the room's next live sessions")
    recordings_public = serializers.BooleanField(required=False, help_text="anyone may list and play them")

    def validate(self, attrs: dict) -> dict:
        for name in self.initial_data:
            if name not in self.fields:
                raise serializers.ValidationError({name: "this field cannot be changed here"})
        if not attrs:
            raise serializers.ValidationError(f"send any of {', '.join(self.fields)}")
        return attrs


class RoomOutput(serializers.ModelSerializer):
    """What anyone may see of a room: no key, no key hash, no invitee list."""

    room_id = serializers.CharField(source="public_id")
    owner = serializers.CharField(source="owner.username")
    play_urls = serializers.SerializerMethodField()

    class Meta:
        model = Room
        fields = ["room_id", "title", "owner", "push_protocol", "status", "recording", "recordings_public",
                  "call_access", "play_urls",
                  "created_at", "updated_at"]

    def get_play_urls(self, room: Room) -> dict[str, str]:
        return room_play_urls(room)


class RoomOwnerOutput(RoomOutput):
    """A room as its owner sees it: also who is invited into its call."""

    call_invitees = serializers.SerializerMethodField()

    class Meta(RoomOutput.Meta):
        fields = [*RoomOutput.Meta.fields, "call_invitees"]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_call_invitees(self, room: Room) -> list[str]:
        return sorted(user.get_username() for user in room.call_invitees.all())


class PushUrlsOutput(serializers.Serializer):
    rtmp_server = serializers.CharField()
    stream_key = serializers.CharField()
    rtmp = serializers.CharField()
    whip = serializers.CharField()


class RoomWithKeyOutput(serializers.Serializer):
    room = RoomOwnerOutput()
    stream_key = serializers.CharField()
    push_urls = PushUrlsOutput()


class RecordingOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()

    class Meta:
        model = Recording
        fields = ["id", "status", "started_at", "ended_at", "end_reason", "duration", "size", "video_codec",
                  "audio_codec", "width", "height", "url", "thumbnail_url", "error"]

    def _url(self, recording, kind: str) -> str | None:
        from .recording_files import recording_file_url

        if recording.status != "ready":
            return None
        request = self.context.get("request")
        url = recording_file_url(recording, kind)
        return request.build_absolute_uri(url) if request is not None else url

    def get_url(self, recording) -> str | None:
        return self._url(recording, "mp4")

    def get_thumbnail_url(self, recording) -> str | None:
        return self._url(recording, "jpg") if recording.thumbnail else None
