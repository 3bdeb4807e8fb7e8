"""Celery tasks: one more interface to the services."""
from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from . import services
from .models import EndReason, LiveSession, Room, RoomStatus

log = logging.getLogger(__name__)


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


@shared_task
def nodes_sweep() -> list[str]:
    """End the sessions of media nodes whose heartbeat lapsed (see `live.nodes.nodes_sweep`)."""
    from .nodes import nodes_sweep as sweep

    return sweep()


@shared_task(bind=True, max_retries=5)
def recording_finalize(self, recording_id: str) -> str:
    """A finished recording's faststart MP4 and thumbnail; retried with backoff, then failed."""
    from . import recordings

    try:
        return recordings.recording_finalize(recording_id=recording_id).status
    except Exception as exc:
        if self.request.retries >= self.max_retries or self.request.is_eager:  # eager: no worker to retry
            log.exception("recording %s: finalizing failed", recording_id)
            recordings.recording_failed(recording_id=recording_id, error=f"{type(exc).__name__}: {exc}")
            return "failed"
        raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 1)) from exc


@shared_task
def recordings_recover() -> int:
    """Finalize recordings a dead media node left open (see `live.recordings.recordings_recover`)."""
    from . import recordings

    return recordings.recordings_recover()


@shared_task
def hook_deliver(delivery_id: int) -> str:
    """One try of a notification webhook; queues the next try (exponential backoff) if it failed."""
    from . import hooks

    delay = hooks.deliver(delivery_id)
    if delay is None:
        return "done"
    hook_deliver.apply_async((delivery_id,), countdown=delay)
    return f"retry in {delay:g} s"


@shared_task
def storage_expire() -> dict[str, int]:
    """Hourly: recordings past RECORDINGS_RETENTION_DAYS, and HLS files of streams no longer live
    (a media node that died before its cleanup), when this host shares the node's HLS_PATH."""
    import time
    from pathlib import Path

    from django.conf import settings

    from media.config import MediaConfig
    from media.hls.from_hub import leftovers, remove_files

    from . import recordings

    expired = recordings.recordings_expire(days=settings.RECORDINGS_RETENTION_DAYS)
    config = MediaConfig.from_env()
    root = Path(config.hls_path)
    live = set(Room.objects.filter(status=RoomStatus.LIVE).values_list("public_id", flat=True))
    stale = leftovers(root, live, older_than=max(config.hls_cleanup_after, 60.0) * 2, now=time.time())
    for public_id in stale:
        remove_files(root, public_id)
    if stale:
        log.info("hls: removed the leftovers of %d stream(s) no longer live: %s", len(stale), ", ".join(stale))
    return {"recordings": expired, "hls": len(stale)}
