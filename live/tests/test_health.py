"""/health in-process: the embedded default and a Redis that is down."""
from __future__ import annotations

import pytest

from tests.support.procs import free_port

pytestmark = pytest.mark.django_db


def test_embedded_default_is_healthy_with_redis_disabled(client, settings):
    settings.REDIS_URL = ""
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"code": 0, "message": "success",
                               "data": {"database": "healthy", "redis": "disabled"}}


def test_redis_down_is_503_naming_redis(client, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == 503 and "redis" in body["message"]
    assert body["data"]["database"] == "healthy" and body["data"]["redis"].startswith("unhealthy")
