"""The publish page: camera and microphone to the room over WHIP (the key is typed in, never in a URL)."""
from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from live import selectors


def publish_page(request: HttpRequest, public_id: str) -> HttpResponse:
    room = selectors.room_get_by_public_id(public_id=public_id)
    if room is None:
        raise Http404("room not found")
    return render(request, "live/publish.html", {"room": room})
