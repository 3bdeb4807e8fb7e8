"""Rooms, their stream keys and live sessions."""
from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models


def new_public_id() -> str:
    """What viewers see in every play URL: random, short, never the stream key."""
    return secrets.token_hex(6)


class PushProtocol(models.TextChoices):
    RTMP = "rtmp", "RTMP"
    WEBRTC = "webrtc", "WebRTC"


class RoomStatus(models.TextChoices):
    IDLE = "idle", "Idle"
    LIVE = "live", "Live"
    ENDED = "ended", "Ended"


class EndReason(models.TextChoices):
    PUBLISHER_LEFT = "publisher_left", "Publisher left"
    DROPPED_BY_STAFF = "dropped_by_staff", "Dropped by staff"
    KEY_ROTATED = "key_rotated", "Key rotated"
    ERROR = "error", "Error"
    NODE_LOST = "node_lost", "Media node lost"


class CallAccess(models.TextChoices):
    """Who may join a room's call (`rtc:join` on the room socket) and so produce media in it."""

    OWNER = "owner", "Only the owner"
    INVITED = "invited", "The owner and invited users"
    USERS = "users", "Any logged-in user"


class Room(models.Model):
    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    title = models.CharField(max_length=200)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rooms")
    push_protocol = models.CharField(max_length=10, choices=PushProtocol.choices, default=PushProtocol.RTMP)
    status = models.CharField(max_length=10, choices=RoomStatus.choices, default=RoomStatus.IDLE)
    recording = models.BooleanField(default=False)
    recordings_public = models.BooleanField(default=False)  # else only the owner and staff see them
    # The call is never open to anonymous sockets; see live.selectors.call_join_allowed.
    call_access = models.CharField(max_length=10, choices=CallAccess.choices, default=CallAccess.INVITED)
    call_invitees = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="call_invitations",
                                           help_text="Who may join the call when call access is 'invited'.")
    # SHA-256 of the stream key. The key itself is shown once (creation, rotation) and never stored.
    stream_key_hash = models.CharField(max_length=64, unique=True, editable=False)
    key_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Staff's per-room webhook URLs, e.g. {"on_publish": "https://..."}: they replace HOOK_ON_*
    # for this room ("" turns one off). See live/hooks.py.
    hooks = models.JSONField(default=dict, blank=True,
                             help_text='Per-room webhook URLs replacing HOOK_ON_*, e.g. {"on_publish": "https://..."}; '
                                       '"" turns one off.')
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "-updated_at"], name="room_status_recent"),
            models.Index(fields=["owner", "-created_at"], name="room_owner_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.public_id})"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError
        from django.core.validators import URLValidator

        from .hooks import SETTINGS

        self.hooks = self.hooks or {}
        if not isinstance(self.hooks, dict):
            raise ValidationError({"hooks": "a JSON object of event: URL"})
        for event, url in self.hooks.items():
            if event not in SETTINGS:
                raise ValidationError({"hooks": f"unknown event {event!r}; events: {', '.join(SETTINGS)}"})
            if url:
                try:
                    URLValidator(schemes=["http", "https"])(url)
                except ValidationError:
                    raise ValidationError({"hooks": f"{event}: not an http(s) URL"}) from None

    @property
    def is_live(self) -> bool:
        return self.status == RoomStatus.LIVE


class LiveSession(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="sessions")
    protocol = models.CharField(max_length=10, choices=PushProtocol.choices)
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=20, choices=EndReason.choices, blank=True, default="")
    peak_viewers = models.PositiveIntegerField(default=0)
    bytes_received = models.PositiveBigIntegerField(default=0)
    client_addr = models.CharField(max_length=64, blank=True, default="")  # the publisher's, "ip:port"
    node = models.CharField(max_length=64, blank=True, default="")  # the media node that took the publish

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["room", "-started_at"], name="session_room_recent"),
            models.Index(fields=["ended_at"], name="session_ended"),
        ]

    def __str__(self) -> str:
        return f"session {self.pk} of {self.room.public_id}"

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


class RecordingStatus(models.TextChoices):
    RECORDING = "recording"
    FINALIZING = "finalizing"
    READY = "ready"
    FAILED = "failed"


def new_recording_id() -> str:
    return secrets.token_hex(8)


class Recording(models.Model):
    """One live session of a recording room as a file: written as fragmented MP4 while live
    (`{public_id}.part.mp4` under RECORDINGS_PATH), finalized by a Celery task into a faststart MP4."""

    public_id = models.CharField(max_length=32, unique=True, default=new_recording_id, editable=False)
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="recordings")
    session = models.ForeignKey(LiveSession, on_delete=models.SET_NULL, null=True, blank=True,
                                related_name="recordings")
    status = models.CharField(max_length=12, choices=RecordingStatus.choices, default=RecordingStatus.RECORDING)
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=20, blank=True, default="")
    file = models.CharField(max_length=200, blank=True, default="")  # the finished MP4, relative to storage
    thumbnail = models.CharField(max_length=200, blank=True, default="")
    duration = models.FloatField(null=True, blank=True)  # seconds
    size = models.PositiveBigIntegerField(null=True, blank=True)  # bytes
    video_codec = models.CharField(max_length=16, blank=True, default="")
    audio_codec = models.CharField(max_length=16, blank=True, default="")
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["room", "-started_at"], name="recording_room_recent"),
            models.Index(fields=["status"], name="recording_status"),
        ]

    def __str__(self) -> str:
        return f"recording {self.public_id} of {self.room.public_id}"

    @property
    def part_name(self) -> str:
        """The fragmented MP4 written while live (no stream key in any name)."""
        return f"{self.public_id}.part.mp4"


class HookStatus(models.TextChoices):
    PENDING = "pending"  # queued, or waiting for its next try
    DELIVERED = "delivered"
    FAILED = "failed"  # every try failed


class HookDelivery(models.Model):
    """One notification webhook (on_publish_done, on_play_done, on_record_done) and its tries."""

    event = models.CharField(max_length=20)
    url = models.URLField(max_length=500)
    room = models.ForeignKey(Room, on_delete=models.SET_NULL, null=True, blank=True, related_name="hook_deliveries")
    body = models.TextField()  # the JSON sent, as signed
    status = models.CharField(max_length=10, choices=HookStatus.choices, default=HookStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status = models.PositiveIntegerField(null=True, blank=True)  # the receiver's last HTTP status
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "-created_at"], name="hook_status_recent")]

    def __str__(self) -> str:
        return f"{self.event} to {self.url} ({self.status})"
