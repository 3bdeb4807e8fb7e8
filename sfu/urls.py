"""The SFU's HTTP routes; microvibe/urls.py includes them at the root."""
from django.urls import path

from . import pages, whip

urlpatterns = [
    path("live/<str:public_id>/publish", pages.publish_page, name="publish"),
    path("whip/<str:public_id>", whip.whip, name="whip"),
    path("whip/<str:public_id>/<str:session_id>", whip.whip_resource, name="whip-resource"),
    path("whep/<str:public_id>", whip.whep, name="whep"),
    path("whep/<str:public_id>/<str:session_id>", whip.whep_resource, name="whep-resource"),
    path("api/v1/rtc/ice-servers", whip.ice_servers_view, name="rtc-ice-servers"),
    path("api/v1/rtc/stats", whip.stats_view, name="rtc-stats"),
]
