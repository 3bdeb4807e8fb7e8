"""JWT for WebSockets: browsers cannot set headers on a WebSocket, so the access token comes
either as the query parameter `token=...` or as the subprotocol pair `["bearer", "<token>"]`
(the server then answers with the `bearer` subprotocol)."""
from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

BEARER_SUBPROTOCOL = "bearer"


def token_from_scope(scope: dict) -> str | None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("token"):
        return query["token"][0]
    protocols = scope.get("subprotocols") or []
    if len(protocols) >= 2 and protocols[0] == BEARER_SUBPROTOCOL:
        return protocols[1]
    return None


@database_sync_to_async
def _user_for(token: str):
    try:
        user_id = AccessToken(token)["user_id"]
    except (TokenError, KeyError):
        return None
    return get_user_model().objects.filter(pk=user_id, is_active=True).first()


class JwtAuthMiddleware:
    """Sets scope["user"] (AnonymousUser without a token) and scope["auth_error"] for a bad one."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        token = token_from_scope(scope)
        user = await _user_for(token) if token else None
        scope = dict(scope, user=user or AnonymousUser(), auth_error=bool(token) and user is None)
        return await self.inner(scope, receive, send)
