from django.urls import path

from .consumers import RoomConsumer

websocket_urlpatterns = [path("api/v1/live/ws", RoomConsumer.as_asgi())]
