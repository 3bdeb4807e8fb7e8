from django.urls import path, re_path

from . import apis

urlpatterns = [
    path("auth/register", apis.RegisterApi.as_view(), name="auth-register"),
    path("auth/login", apis.LoginApi.as_view(), name="auth-login"),
    path("auth/refresh", apis.RefreshApi.as_view(), name="auth-refresh"),
    path("live/create", apis.RoomCreateApi.as_view(), name="live-create"),
    path("live/list", apis.RoomLiveListApi.as_view(), name="live-list"),
    path("live/mine", apis.RoomMineApi.as_view(), name="live-mine"),
    path("live/<str:public_id>", apis.RoomDetailApi.as_view(), name="live-detail"),
    path("live/<str:public_id>/rotate-key", apis.RoomRotateKeyApi.as_view(), name="live-rotate-key"),
    path("live/<str:public_id>/ingest", apis.RoomIngestApi.as_view(), name="live-ingest"),
    path("live/<str:public_id>/end", apis.RoomEndLiveApi.as_view(), name="live-end"),
    path("live/<str:public_id>/recordings", apis.RoomRecordingsApi.as_view(), name="live-recordings"),
    re_path(r"^live/(?P<public_id>[^/]+)/recording/(?P<action>start|stop)$", apis.RoomRecordingControlApi.as_view(),
            name="live-recording-control"),
    path("stat", apis.StatApi.as_view(), name="stat"),
    path("stat/viewers/<str:viewer_id>/drop", apis.ViewerDropApi.as_view(), name="stat-viewer-drop"),
    path("recordings/<str:recording_id>", apis.RecordingApi.as_view(), name="recording"),
]
