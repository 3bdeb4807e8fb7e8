"""GET /health: the sources' body, 503 naming the part that is down."""
from __future__ import annotations

import logging

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse

log = logging.getLogger(__name__)

HEALTHY = "healthy"
DISABLED = "disabled"


def database_status(alias: str = "default") -> str:
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "down"; say which
        connections[alias].close_if_unusable_or_obsolete()
        return f"unhealthy: {type(exc).__name__}"
    return HEALTHY


def redis_status() -> str:
    if not settings.REDIS_URL:
        return DISABLED
    import redis

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
    except Exception as exc:
        return f"unhealthy: {type(exc).__name__}"
    return HEALTHY


def health(request: HttpRequest) -> JsonResponse:
    parts = {"database": database_status(), "redis": redis_status()}
    down = [name for name, state in parts.items() if state not in (HEALTHY, DISABLED)]
    if down:
        log.warning("health: %s down", ", ".join(down))
        return JsonResponse({"code": 503, "message": f"unhealthy: {', '.join(down)}", "data": parts},
                            status=503)
    return JsonResponse({"code": 0, "message": "success", "data": parts})
