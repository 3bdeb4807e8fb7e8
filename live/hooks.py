"""Webhooks: the operator's HTTP service hears what happens, and decides who may publish and play.

Events and their settings (a room's `hooks` replaces any of them for that room, "" turns it off):

| event            | setting               | when                                     | kind                   |
|------------------|-----------------------|------------------------------------------|------------------------|
| `on_publish`     | `HOOK_ON_PUBLISH`     | a stream key is good, before going live  | asked: 2xx lets it in  |
| `on_play`        | `HOOK_ON_PLAY`        | a player asks to play, before it starts  | asked: 2xx lets it in  |
| `on_publish_done`| `HOOK_ON_PUBLISH_DONE`| the live session ended                   | notification           |
| `on_play_done`   | `HOOK_ON_PLAY_DONE`   | a player went                            | notification           |
| `on_record_done` | `HOOK_ON_RECORD_DONE` | a recording is finalized (ready)         | notification           |

An asked hook has `HOOK_TIMEOUT` s (default 2) to answer; a non-2xx answer, no answer or an error
refuses the publish or play with the protocol's own error and one log line. It runs in a thread of
its own pool, never on the event loop, so a slow receiver slows nobody else. Notifications are
rows (`HookDelivery`, listed in admin) delivered by Celery, retried `HOOK_RETRIES` times with
exponential backoff (`HOOK_RETRY_BASE` s, doubled each try); a receiver that is down delays no
stream. On the embedded default (no Redis, no Celery worker) a thread of the process delivers them
with the same retries.

The request: `POST`, `Content-Type: application/json`, the body a JSON object with `event`,
`room_id` (the room's public id), `session_id` (its live session), `protocol`, `client_addr`,
`time` (ISO 8601, UTC) and the event's own fields (`viewer_id` for plays; `recording` with `id`,
`duration`, `url` for on_record_done); never a stream key. Headers:

    X-MicroVibe-Event: on_publish
    X-MicroVibe-Timestamp: 1796172152                      (Unix seconds when it was sent)
    X-MicroVibe-Signature: sha256=<hex HMAC-SHA256(HOOK_SECRET, "<timestamp>." + body)>

A receiver recomputes the HMAC over the timestamp, a dot and the raw body, compares it in constant
time, and rejects a timestamp more than a few minutes old (a replay). Each retry is signed anew.
"""
from __future__ import annotations

import asyncio
import heapq
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from hashlib import sha256

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from .models import HookDelivery, HookStatus

log = logging.getLogger(__name__)

SETTINGS = {
    "on_publish": "HOOK_ON_PUBLISH",
    "on_publish_done": "HOOK_ON_PUBLISH_DONE",
    "on_play": "HOOK_ON_PLAY",
    "on_play_done": "HOOK_ON_PLAY_DONE",
    "on_record_done": "HOOK_ON_RECORD_DONE",
}
EVENT_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = "X-MicroVibe-Event", "X-MicroVibe-Timestamp", "X-MicroVibe-Signature"
# Calls and failures per event, in this process (the metrics read them).
CALLS: Counter[str] = Counter()
FAILURES: Counter[str] = Counter()
_asking = ThreadPoolExecutor(max_workers=8, thread_name_prefix="hook")


class HookRefused(Exception):
    """An asked hook (on_publish, on_play) did not answer 2xx in time."""


def hook_url(event: str, overrides: dict | None = None) -> str:
    """The URL of `event` for a room with these `hooks` overrides ("" when none is set)."""
    if overrides and event in overrides:
        return str(overrides[event] or "")
    return getattr(settings, SETTINGS[event])


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, sha256).hexdigest()


def payload(event: str, **fields) -> bytes:
    body = {"event": event, "time": datetime.now(UTC).isoformat(timespec="milliseconds"), **fields}
    return json.dumps(body, separators=(",", ":")).encode()


def post(url: str, event: str, body: bytes, timeout: float) -> tuple[int, str]:
    """One signed POST (blocking): the HTTP status (0 when there is none) and an error text."""
    now = int(time.time())
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "MicroVibe-hooks/1", EVENT_HEADER: event,
        TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: signature(settings.HOOK_SECRET, now, body)})
    CALLS[event] += 1
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, error = response.status, ""
    except urllib.error.HTTPError as exc:
        status, error = exc.code, f"answered {exc.code}"
    except (OSError, ValueError) as exc:  # refused, reset, timed out, a bad URL
        status, error = 0, f"{type(exc).__name__}: {exc}"
    if not 200 <= status < 300:
        FAILURES[event] += 1
    return status, error


async def ask(event: str, url: str, body: bytes) -> None:
    """Call an asked hook; raises HookRefused unless it answers 2xx within HOOK_TIMEOUT."""
    timeout = settings.HOOK_TIMEOUT
    loop = asyncio.get_running_loop()
    try:
        status, error = await asyncio.wait_for(loop.run_in_executor(_asking, post, url, event, body, timeout),
                                               timeout + 0.5)
    except TimeoutError:
        status, error = 0, "no answer"
    if not 200 <= status < 300:
        why = error if status else f"no answer in {timeout:g} s ({error})"
        raise HookRefused(f"the {event} hook refused it: {why}")


# ---------------------------------------------------------------------------- notifications


def notify(event: str, *, room_pk: int, public_id: str, overrides: dict | None, **fields) -> HookDelivery | None:
    """Queue a notification about a room (its row is written now, the request made later)."""
    url = hook_url(event, overrides)
    if not url:
        return None
    body = payload(event, room_id=public_id, **fields)
    delivery = HookDelivery.objects.create(event=event, url=url, room_id=room_pk, body=body.decode())
    transaction.on_commit(lambda: deliver_later(delivery.pk, 0.0))
    return delivery


def deliver(delivery_id: int) -> float | None:
    """One try of a notification; the delay before the next one, or None when it is done."""
    delivery = HookDelivery.objects.filter(pk=delivery_id, status=HookStatus.PENDING).first()
    if delivery is None:
        return None
    status, error = post(delivery.url, delivery.event, delivery.body.encode(), settings.HOOK_TIMEOUT)
    attempts = delivery.attempts + 1
    fields = {"attempts": attempts, "last_status": status or None, "error": error[:2000]}
    if 200 <= status < 300:
        HookDelivery.objects.filter(pk=delivery_id).update(status=HookStatus.DELIVERED, delivered_at=timezone.now(),
                                                           **fields)
        return None
    if attempts > settings.HOOK_RETRIES:
        log.warning("hook %s to %s failed %d times, giving up: %s", delivery.event, delivery.url, attempts, error)
        HookDelivery.objects.filter(pk=delivery_id).update(status=HookStatus.FAILED, **fields)
        return None
    HookDelivery.objects.filter(pk=delivery_id).update(**fields)
    delay = settings.HOOK_RETRY_BASE * 2 ** (attempts - 1)
    log.info("hook %s to %s: %s; trying again in %g s", delivery.event, delivery.url, error, delay)
    return delay


def deliver_later(delivery_id: int, delay: float) -> None:
    from microvibe.celery import app

    from .tasks import hook_deliver

    if app.conf.task_always_eager:  # no worker (the embedded default): this process delivers
        _local.schedule(delivery_id, delay)
        return

    hook_deliver.apply_async((delivery_id,), countdown=delay)


class _LocalDeliveries:
    """The embedded default's Celery stand-in for notifications: one thread, a timer heap."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int]] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def schedule(self, delivery_id: int, delay: float) -> None:
        with self._wake:
            heapq.heappush(self._due, (time.monotonic() + delay, delivery_id))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hook-deliveries", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._wake.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, delivery_id = heapq.heappop(self._due)
            try:
                delay = deliver(delivery_id)
            except Exception:
                log.exception("hook delivery %s failed", delivery_id)
                delay = None
            finally:
                close_old_connections()
            if delay is not None:
                self.schedule(delivery_id, delay)


_local = _LocalDeliveries()
