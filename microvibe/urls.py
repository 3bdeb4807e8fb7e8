from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound, HttpResponseRedirect
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from live.health import health
from live.media_api import web_only
from live.metrics import metrics_view
from live.pages import watch
from live.play_urls import holder_urls
from live.recording_files import recording_file


def _play_redirect(public_id: str, kind: str, suffix: str, query: str) -> HttpResponse:
    """FLV and HLS are served by the media nodes' own HTTP servers (they bound every viewer's write
    buffer, which an ASGI server cannot). Here a player is sent on: to the node that holds the
    stream, or (one process, the media plane here) to STREAMING_*; the web host of several nodes
    answers 404 for a room that is not live."""
    urls = holder_urls(public_id)
    if urls is None and web_only():
        return HttpResponseNotFound("not live\n", content_type="text/plain")
    base = urls[kind] if urls else getattr(settings, f"STREAMING_{kind.upper()}_SERVER")
    return HttpResponseRedirect(f"{base}/{public_id}{suffix}{'?' + query if query else ''}")


def flv_redirect(request: HttpRequest, public_id: str) -> HttpResponse:
    return _play_redirect(public_id, "flv", ".flv", request.META.get("QUERY_STRING", ""))


def hls_redirect(request: HttpRequest, public_id: str) -> HttpResponse:
    return _play_redirect(public_id, "hls", ".m3u8", request.META.get("QUERY_STRING", ""))


urlpatterns = [
    path("health", health, name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/schema", SpectacularAPIView.as_view(), name="openapi-schema"),
    path("api/v1/", include("live.urls")),
    path("flv/<str:public_id>.flv", flv_redirect, name="flv-redirect"),
    path("hls/<str:public_id>.m3u8", hls_redirect, name="hls-redirect"),
    path("recordings/<str:public_id>.<str:kind>", recording_file, name="recording-file"),
    path("live/<str:public_id>", watch, name="watch"),
    path("", include("sfu.urls")),
]
