"""Django admin for rooms and live sessions. The stream key is never shown, except once to the
staff member who creates the room or rotates its key (in the confirmation message)."""
from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from . import services
from .models import LiveSession, Room, RoomStatus
from .stream_keys import stream_key_generate, stream_key_hash


class LiveSessionInline(admin.TabularInline):
    model = LiveSession
    extra = 0
    can_delete = False
    fields = ("protocol", "started_at", "ended_at", "end_reason", "peak_viewers", "bytes_received")
    readonly_fields = fields
    ordering = ("-started_at",)
    max_num = 0
    show_change_link = True


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ("title", "public_id", "owner", "push_protocol", "status", "is_live_now", "recording",
                    "created_at")
    list_filter = ("status", "push_protocol", "recording", "call_access", "created_at")
    search_fields = ("title", "public_id", "owner__username", "owner__email")
    readonly_fields = ("public_id", "status", "key_rotated_at", "created_at", "updated_at")
    fields = ("title", "owner", "push_protocol", "recording", "call_access", "call_invitees", "public_id", "status",
              "key_rotated_at", "created_at", "updated_at")
    autocomplete_fields = ("owner",)
    filter_horizontal = ("call_invitees",)
    inlines = (LiveSessionInline,)
    actions = ("rotate_key", "end_live")
    list_select_related = ("owner",)

    @admin.display(boolean=True, description="live")
    def is_live_now(self, room: Room) -> bool:
        return room.status == RoomStatus.LIVE

    def save_model(self, request: HttpRequest, obj: Room, form, change: bool) -> None:
        if not change:
            stream_key = stream_key_generate()
            obj.stream_key_hash = stream_key_hash(stream_key)
            super().save_model(request, obj, form, change)
            self.message_user(request, f"Stream key for {obj.public_id} (shown once, copy it now): {stream_key}",
                              messages.WARNING)
            return
        super().save_model(request, obj, form, change)

    @admin.action(description="Rotate stream key (drops a live publisher)")
    def rotate_key(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        for room in queryset:
            stream_key = services.stream_key_rotate(room=room)
            self.message_user(request, f"New stream key for {room.public_id} (shown once): {stream_key}",
                              messages.WARNING)

    @admin.action(description="End live (drop the publisher)")
    def end_live(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        ended = sum(1 for room in queryset if services.room_end_live(room=room))
        self.message_user(request, f"Ended {ended} live stream(s).", messages.SUCCESS)


@admin.register(LiveSession)
class LiveSessionAdmin(admin.ModelAdmin):
    list_display = ("id", "room", "protocol", "started_at", "ended_at", "end_reason", "peak_viewers",
                    "bytes_received")
    list_filter = ("protocol", "end_reason", ("ended_at", admin.EmptyFieldListFilter), "started_at")
    search_fields = ("room__title", "room__public_id", "room__owner__username")
    date_hierarchy = "started_at"
    list_select_related = ("room",)
    readonly_fields = ("room", "protocol", "started_at", "ended_at", "end_reason", "peak_viewers",
                       "bytes_received")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
