"""Django admin for rooms and live sessions. The stream key is never shown, except once to the
staff member who creates the room or rotates its key (in the confirmation message).

"Live now" (`/admin/live/room/live-now/`, linked from the rooms list) is /api/v1/stat for staff,
with buttons to drop one viewer, end a live, and start or stop its recording."""
from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from . import recordings, selectors, services
from .models import HookDelivery, HookStatus, LiveSession, Recording, RecordingStatus, Room, RoomStatus
from .recording_files import recording_file_url
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
    fields = ("title", "owner", "push_protocol", "recording", "call_access", "call_invitees", "hooks", "public_id",
              "status", "key_rotated_at", "created_at", "updated_at")
    autocomplete_fields = ("owner",)
    filter_horizontal = ("call_invitees",)
    inlines = (LiveSessionInline,)
    actions = ("rotate_key", "end_live", "recording_start", "recording_stop")
    list_select_related = ("owner",)

    @admin.display(boolean=True, description="live")
    def is_live_now(self, room: Room) -> bool:
        return room.status == RoomStatus.LIVE

    def get_urls(self) -> list:
        return [path("live-now/", self.admin_site.admin_view(self.live_now_view), name="live_room_live_now"),
                *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra = {"live_now_url": reverse("admin:live_room_live_now"), **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)

    def live_now_view(self, request: HttpRequest) -> HttpResponse:
        """What /api/v1/stat shows, with staff's buttons: drop a viewer, end a live, record."""
        if request.method == "POST":
            self._live_now_action(request)
            return HttpResponseRedirect(request.path)
        nodes = selectors.node_stats()
        streams = [{"node": n["node"], **s} for n in nodes for s in n["streams"]]
        totals = {"streams": len(streams), "viewers": sum(s["viewers"]["total"] for s in streams),
                  "nodes": len(nodes)}
        context = {**self.admin_site.each_context(request), "streams": streams, "totals": totals,
                   "title": "Live now", "opts": self.model._meta}
        return TemplateResponse(request, "admin/live/stat.html", context)

    def _live_now_action(self, request: HttpRequest) -> None:
        action = request.POST.get("action", "")
        if action == "drop_viewer":
            viewer_id = request.POST.get("viewer_id", "")
            dropped = services.viewer_drop(viewer_id=viewer_id)
            self.message_user(request, f"viewer {viewer_id}: " + ("dropped" if dropped else "not watching now"),
                              messages.SUCCESS if dropped else messages.WARNING)
            return
        room = Room.objects.filter(public_id=request.POST.get("room_id", "")).first()
        if room is None or action not in ("end_live", "recording_start", "recording_stop"):
            self.message_user(request, "no such room or action", messages.ERROR)
            return
        getattr(self, action)(request, Room.objects.filter(pk=room.pk))

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


    @admin.action(description="Start recording now (live rooms)")
    def recording_start(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        self._recording_request(request, queryset, recordings.recording_start_request, "started")

    @admin.action(description="Stop recording now")
    def recording_stop(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        self._recording_request(request, queryset, recordings.recording_stop_request, "stopped")

    def _recording_request(self, request: HttpRequest, queryset: QuerySet[Room], action, done: str) -> None:
        for room in queryset:
            try:
                action(room=room)
            except recordings.RecordingConflict as exc:
                self.message_user(request, f"{room.public_id}: {exc}", messages.WARNING)
            else:
                self.message_user(request, f"{room.public_id}: recording {done} (asked of its media node)",
                                  messages.SUCCESS)


@admin.register(LiveSession)
class LiveSessionAdmin(admin.ModelAdmin):
    list_display = ("id", "room", "protocol", "client_addr", "started_at", "ended_at", "end_reason", "peak_viewers",
                    "bytes_received")
    list_filter = ("protocol", "end_reason", ("ended_at", admin.EmptyFieldListFilter), "started_at")
    search_fields = ("room__title", "room__public_id", "room__owner__username")
    date_hierarchy = "started_at"
    list_select_related = ("room",)
    readonly_fields = ("room", "protocol", "client_addr", "started_at", "ended_at", "end_reason", "peak_viewers",
                       "bytes_received")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Recording)
class RecordingAdmin(admin.ModelAdmin):
    list_display = ("public_id", "room", "status", "started_at", "duration_s", "size", "video_codec", "audio_codec",
                    "error")
    list_filter = ("status",)
    search_fields = ("public_id", "room__public_id", "room__title")
    readonly_fields = ("public_id", "room", "session", "status", "started_at", "ended_at", "end_reason", "file",
                       "thumbnail", "duration", "size", "video_codec", "audio_codec", "width", "height", "attempts",
                       "error", "player")
    actions = ("finalize_again",)

    @admin.display(description="duration (s)")
    def duration_s(self, recording: Recording) -> str:
        return f"{recording.duration:.1f}" if recording.duration is not None else "-"

    @admin.display(description="player")
    def player(self, recording: Recording) -> str:
        if recording.status != RecordingStatus.READY:
            return "-"
        return format_html('<video controls preload="metadata" width="480" src="{}" poster="{}"></video>',
                           recording_file_url(recording, "mp4"), recording_file_url(recording, "jpg"))

    @admin.action(description="Finalize again (failed or stuck recordings)")
    def finalize_again(self, request: HttpRequest, queryset: QuerySet[Recording]) -> None:
        from .tasks import recording_finalize

        for recording in queryset.exclude(status=RecordingStatus.READY):
            Recording.objects.filter(pk=recording.pk).update(status=RecordingStatus.FINALIZING, error="")
            recording_finalize.delay(recording.public_id)
        self.message_user(request, "finalizing queued", messages.SUCCESS)

    def delete_model(self, request: HttpRequest, recording: Recording) -> None:
        recordings.recording_delete(recording=recording)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Recording]) -> None:
        for recording in queryset:
            recordings.recording_delete(recording=recording)


@admin.register(HookDelivery)
class HookDeliveryAdmin(admin.ModelAdmin):
    """Notification webhooks: what was sent where, how many tries, the receiver's last answer."""

    list_display = ("event", "room", "url", "status", "attempts", "last_status", "error", "created_at", "delivered_at")
    list_filter = ("status", "event", "created_at")
    search_fields = ("url", "room__public_id", "room__title")
    date_hierarchy = "created_at"
    list_select_related = ("room",)
    readonly_fields = ("event", "url", "room", "body", "status", "attempts", "last_status", "error", "created_at",
                       "delivered_at")
    actions = ("deliver_again",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Deliver again (failed notifications)")
    def deliver_again(self, request: HttpRequest, queryset: QuerySet[HookDelivery]) -> None:
        from .hooks import deliver_later

        failed = list(queryset.filter(status=HookStatus.FAILED).values_list("pk", flat=True))
        HookDelivery.objects.filter(pk__in=failed).update(status=HookStatus.PENDING, attempts=0)
        for pk in failed:
            deliver_later(pk, 0.0)
        self.message_user(request, f"{len(failed)} notification(s) queued again", messages.SUCCESS)
