"""Input and output shapes of the REST API."""
from __future__ import annotations

from django.contrib.auth import get_user_model, password_validation
from rest_framework import serializers

from .models import PushProtocol, Room
from .play_urls import room_play_urls


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


class RoomCreateInput(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    push_protocol = serializers.ChoiceField(choices=PushProtocol.choices, default=PushProtocol.RTMP)
    recording = serializers.BooleanField(default=False)


class RoomOutput(serializers.ModelSerializer):
    """What anyone may see of a room: no key, no key hash."""

    room_id = serializers.CharField(source="public_id")
    owner = serializers.CharField(source="owner.username")
    play_urls = serializers.SerializerMethodField()

    class Meta:
        model = Room
        fields = ["room_id", "title", "owner", "push_protocol", "status", "recording", "play_urls",
                  "created_at", "updated_at"]

    def get_play_urls(self, room: Room) -> dict[str, str]:
        return room_play_urls(room)


class PushUrlsOutput(serializers.Serializer):
    rtmp_server = serializers.CharField()
    stream_key = serializers.CharField()
    rtmp = serializers.CharField()
    whip = serializers.CharField()


class RoomWithKeyOutput(serializers.Serializer):
    room = RoomOutput()
    stream_key = serializers.CharField()
    push_urls = PushUrlsOutput()
