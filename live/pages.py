"""Pages a person uses: the watch page (FLV and HLS players, viewer count, chat)."""
from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from . import selectors
from .play_urls import room_play_urls


def watch(request: HttpRequest, public_id: str) -> HttpResponse:
    room = selectors.room_get_by_public_id(public_id=public_id)
    if room is None:
        raise Http404("room not found")
    return render(request, "live/watch.html", {"room": room, "play_urls": room_play_urls(room)})
