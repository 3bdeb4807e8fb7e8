"""ICE servers clients should use: STUN, and TURN with coturn REST-API time-limited credentials.

coturn `use-auth-secret` / `static-auth-secret`: username = "<expiry unix time>:<user>",
credential = base64(HMAC-SHA1(secret, username)).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import time

from django.conf import settings


def turn_credentials(user: str, *, secret: str, ttl: int, now: float | None = None) -> tuple[str, str]:
    expiry = int((now if now is not None else time.time()) + ttl)
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(user: str = "anonymous") -> list[dict]:
    """The `iceServers` list for RTCPeerConnection (browser shape)."""
    servers: list[dict] = []
    if settings.RTC_STUN_URLS:
        servers.append({"urls": list(settings.RTC_STUN_URLS)})
    if settings.RTC_TURN_URLS and settings.RTC_TURN_SECRET:
        username, credential = turn_credentials(user, secret=settings.RTC_TURN_SECRET, ttl=settings.RTC_TURN_TTL)
        servers.append({"urls": list(settings.RTC_TURN_URLS), "username": username, "credential": credential})
    return servers


def link_headers(servers: list[dict]) -> list[str]:
    """RFC 9725 section 4.6: ICE servers as Link headers of the 201 answer."""
    links = []
    for server in servers:
        for url in server["urls"]:
            link = f'<{url}>; rel="ice-server"'
            if "username" in server:
                link += f'; username="{server["username"]}"; credential="{server["credential"]}"'
                link += '; credential-type="password"'
            links.append(link)
    return links
