"""The control plane's part of /metrics (prometheus_client), and the web port's /metrics view.

`HookCollector`: asked-hook calls and failures made in this process (a media node's on_publish /
on_play, a worker's notifications), read when scraped. `NotificationCollector` (the web port
only: it reads the database): notification rows by status. The view serves them with the media
plane's own metrics (media/metrics.py) when the plane runs in this process, the embedded default.
Access: loopback, or `Authorization: Bearer METRICS_TOKEN`; 403 otherwise.
"""
from __future__ import annotations

from collections.abc import Iterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from media.metrics import CONTENT_TYPE, metrics_allowed

from . import hooks
from .models import HookDelivery


class HookCollector:
    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily("microvibe_hook_calls", "Webhook requests made by this process, by event.",
                                    labels=["event"])
        failures = CounterMetricFamily("microvibe_hook_failures", "Webhook requests that got no 2xx answer, by "
                                       "event.", labels=["event"])
        for event in hooks.SETTINGS:
            calls.add_metric([event], hooks.CALLS.get(event, 0))
            failures.add_metric([event], hooks.FAILURES.get(event, 0))
        yield calls
        yield failures


class NotificationCollector:
    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("microvibe_hook_notifications", "Notification webhooks by status (delivered, "
                                   "pending: waiting for a try, failed: gave up).", labels=["status"])
        counts = dict(HookDelivery.objects.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
        for status in ("delivered", "pending", "failed"):
            family.add_metric([status], counts.get(status, 0))
        yield family


def collectors() -> list:
    """What a media node adds to its own /metrics (no database)."""
    return [HookCollector()]


_web = CollectorRegistry()
_web.register(NotificationCollector())


def _client_ip(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "")


@require_safe
async def metrics_view(request: HttpRequest) -> HttpResponse:
    """Async: the media plane's counters are read on its own event loop (the one the ASGI app runs
    on), never from another thread; the database's part runs in a thread."""
    if not metrics_allowed(_client_ip(request), request.headers.get("Authorization", ""), settings.METRICS_TOKEN):
        return HttpResponse("metrics: loopback only, or Authorization: Bearer METRICS_TOKEN\n", status=403,
                            content_type="text/plain")
    from media.runtime import current_plane

    plane = current_plane()
    if plane is not None:  # the media plane in this process: its metrics, with the hooks' (see collectors())
        body = generate_latest(plane.metrics)
    else:
        local = CollectorRegistry()
        local.register(HookCollector())
        body = generate_latest(local)
    body += await sync_to_async(generate_latest)(_web)
    return HttpResponse(body, content_type=CONTENT_TYPE)
