"""Celery tasks: one more interface to the services."""
from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from . import services
from .models import EndReason, LiveSession, RoomStatus


@shared_task
def sessions_close_stale(max_hours: int = 48) -> int:
    """Close sessions whose room is no longer live (a media node died) or that ran absurdly long."""
    too_old = timezone.now() - timedelta(hours=max_hours)
    stale = LiveSession.objects.filter(ended_at__isnull=True).exclude(
        room__status=RoomStatus.LIVE, started_at__gte=too_old
    )
    closed = 0
    for session in stale.only("pk"):
        services.session_end(session_id=session.pk, reason=EndReason.ERROR)
        closed += 1
    return closed
