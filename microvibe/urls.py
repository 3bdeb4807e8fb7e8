from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from live.health import health
from live.metrics import metrics_view
from live.pages import watch
from live.recording_files import recording_file


def flv_redirect(request: HttpRequest, public_id: str) -> HttpResponseRedirect:
    """HTTP-FLV is served by the media plane's own HTTP server, which can bound every viewer's
    write buffer (an ASGI server cannot); this keeps :8080/flv/{id}.flv working for players."""
    return HttpResponseRedirect(f"{settings.STREAMING_FLV_SERVER}/{public_id}.flv")


urlpatterns = [
    path("health", health, name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/schema", SpectacularAPIView.as_view(), name="openapi-schema"),
    path("api/v1/", include("live.urls")),
    path("flv/<str:public_id>.flv", flv_redirect, name="flv-redirect"),
    path("recordings/<str:public_id>.<str:kind>", recording_file, name="recording-file"),
    path("live/<str:public_id>", watch, name="watch"),
    path("", include("sfu.urls")),
]
