"""The sources' response envelope: {"code": 0, "message": "success", "data": ...}.

Errors keep the envelope with a non-zero `code` (the HTTP status) and, for bad fields, an
`errors` object naming each field.
"""
from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def ok(data: Any = None, *, http_status: int = status.HTTP_200_OK) -> Response:
    return Response({"code": 0, "message": "success", "data": data}, status=http_status)


def error_body(code: int, message: str, errors: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, "data": None}
    if errors is not None:
        body["errors"] = errors
    return body


def _first_message(detail: Any) -> str:
    """Flatten DRF's nested error detail into one line naming the field."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            inner = _first_message(value)
            return inner if field == "non_field_errors" else f"{field}: {inner}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body(response.status_code, _first_message(exc.detail), exc.detail)
    else:
        detail = getattr(exc, "detail", None) or str(exc)
        response.data = error_body(response.status_code, _first_message(detail))
    return response
