"""A tiny JSON client for the running service's REST API."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from .procs import Service


def api(service: Service, path: str, body: dict | None = None, token: str | None = None,
        method: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        service.url(path), method=method or ("POST" if body is not None else "GET"),
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def register(service: Service, username: str) -> str:
    status, body = api(service, "/api/v1/auth/register", {"username": username, "password": "long-enough-1"})
    assert status == 201, body
    return body["data"]["access"]


def create_room(service: Service, token: str, title: str = "e2e room") -> dict:
    status, body = api(service, "/api/v1/live/create", {"title": title, "push_protocol": "rtmp"}, token)
    assert status == 201, body
    return body["data"]


def staff_token(service: Service, username: str) -> str:
    """A staff user's access token (staff is set in the database; the token is read per request)."""
    token = register(service, username)
    service.manage("shell", "-c", "from django.contrib.auth import get_user_model; "
                   f"get_user_model().objects.filter(username={username!r}).update(is_staff=True)")
    return token
