"""The REST API as a client sees it: envelope, auth, ownership and errors."""
from __future__ import annotations

import json

import pytest

from live.models import Room, RoomStatus

pytestmark = pytest.mark.django_db


def assert_error(response, status: int) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == status and body["data"] is None and body["message"]
    return body


def test_register_login_refresh_and_use_the_token(client_for):
    client = client_for()
    registered = client.post("/api/v1/auth/register", {"username": "carol", "password": "long-enough-1"},
                             format="json")
    assert registered.status_code == 201
    assert registered.json()["code"] == 0 and registered.json()["data"]["user"]["username"] == "carol"

    login = client.post("/api/v1/auth/login", {"username": "carol", "password": "long-enough-1"}, format="json")
    body = login.json()
    assert login.status_code == 200 and body == {"code": 0, "message": "success", "data": body["data"]}
    access, refresh = body["data"]["access"], body["data"]["refresh"]

    refreshed = client.post("/api/v1/auth/refresh", {"refresh": refresh}, format="json")
    assert refreshed.status_code == 200 and refreshed.json()["data"]["access"]

    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    assert client.get("/api/v1/live/mine").json() == {"code": 0, "message": "success", "data": []}


def test_login_with_a_wrong_password_is_401(client_for, user):
    response = client_for().post("/api/v1/auth/login", {"username": "alice", "password": "nope-nope"}, format="json")
    assert_error(response, 401)


def test_register_rejects_a_taken_name_and_names_the_field(client_for, user):
    response = client_for().post("/api/v1/auth/register", {"username": "alice", "password": "long-enough-1"},
                                 format="json")
    body = assert_error(response, 400)
    assert body["message"].startswith("username:") and "username" in body["errors"]


def test_play_urls_name_the_low_latency_playlist_when_it_is_on(client_for, user, settings):
    settings.LLHLS_ENABLED = True
    room = client_for(user).post("/api/v1/live/create", {"title": "LL"}, format="json").json()["data"]["room"]
    assert room["play_urls"]["llhls"] == f"http://localhost:8081/hls/{room['room_id']}/ll.m3u8"
    assert room["play_urls"]["hls"] == f"http://localhost:8081/hls/{room['room_id']}.m3u8"


def test_create_returns_key_push_and_play_urls(client_for, user):
    response = client_for(user).post("/api/v1/live/create", {"title": "My show", "push_protocol": "rtmp"},
                                     format="json")
    assert response.status_code == 201
    data = response.json()["data"]
    key, room = data["stream_key"], data["room"]
    assert key.startswith("sk_") and len(key) > 30
    assert data["push_urls"]["rtmp_server"] == "rtmp://localhost:1935/live"
    assert data["push_urls"]["rtmp"].endswith("/live/" + key)
    assert data["push_urls"]["whip"].endswith("/whip/" + room["room_id"])
    assert set(room["play_urls"]) == {"hls", "flv", "rtmp", "whep", "ws"}
    assert all(room["room_id"] in url and key not in url for url in room["play_urls"].values())
    assert room["status"] == "idle" and room["owner"] == "alice"
    stored = Room.objects.get(public_id=room["room_id"])
    assert key not in stored.stream_key_hash and len(stored.stream_key_hash) == 64


def test_no_viewer_ever_sees_the_key(client_for, user, room_and_key):
    room, key = room_and_key
    Room.objects.filter(pk=room.pk).update(status=RoomStatus.LIVE)
    for url in ("/api/v1/live/list", f"/api/v1/live/{room.public_id}", "/api/v1/live/mine"):
        text = client_for(user).get(url).content.decode()
        assert room.public_id in text
        assert key not in text and room.stream_key_hash not in text


def test_public_list_shows_only_live_rooms(client_for, user, room_and_key):
    room, _ = room_and_key
    assert client_for().get("/api/v1/live/list").json()["data"] == []
    Room.objects.filter(pk=room.pk).update(status=RoomStatus.LIVE)
    listed = client_for().get("/api/v1/live/list").json()["data"]
    assert [r["room_id"] for r in listed] == [room.public_id]


def test_bad_json_is_400(client_for, user):
    response = client_for(user).post("/api/v1/live/create", data="{not json", content_type="application/json")
    assert_error(response, 400)


@pytest.mark.parametrize("payload, field", [({}, "title"), ({"title": "x", "push_protocol": "smoke"}, "push_protocol"),
                                            ({"title": "x" * 201}, "title")])
def test_bad_fields_are_400_naming_the_field(client_for, user, payload, field):
    response = client_for(user).post("/api/v1/live/create", payload, format="json")
    body = assert_error(response, 400)
    assert body["message"].startswith(f"{field}:") and field in body["errors"]


def test_no_token_is_401(client_for):
    assert_error(client_for().post("/api/v1/live/create", {"title": "x"}, format="json"), 401)
    assert_error(client_for().get("/api/v1/live/mine"), 401)


def test_garbage_token_is_401(client_for):
    client = client_for()
    client.credentials(HTTP_AUTHORIZATION="Bearer not.a.jwt")
    assert_error(client.get("/api/v1/live/mine"), 401)


def test_someone_elses_room_is_403(client_for, other_user, room_and_key):
    room, _ = room_and_key
    for method, url in (("post", f"/api/v1/live/{room.public_id}/rotate-key"),
                        ("post", f"/api/v1/live/{room.public_id}/end"),
                        ("delete", f"/api/v1/live/{room.public_id}")):
        assert_error(getattr(client_for(other_user), method)(url), 403)
    assert Room.objects.filter(pk=room.pk).exists()


def test_unknown_room_is_404(client_for, user):
    assert_error(client_for().get("/api/v1/live/nosuchroom"), 404)
    assert_error(client_for(user).post("/api/v1/live/nosuchroom/rotate-key"), 404)
    assert_error(client_for(user).delete("/api/v1/live/nosuchroom"), 404)


def test_rotate_key_gives_a_new_key_and_the_old_one_stops_working(client_for, user, room_and_key):
    from live.selectors import room_get_by_stream_key

    room, old_key = room_and_key
    data = client_for(user).post(f"/api/v1/live/{room.public_id}/rotate-key").json()["data"]
    assert data["stream_key"] != old_key
    assert room_get_by_stream_key(stream_key=old_key) is None
    assert room_get_by_stream_key(stream_key=data["stream_key"]).pk == room.pk


def test_end_live_and_delete(client_for, user, room_and_key):
    room, _ = room_and_key
    ended = client_for(user).post(f"/api/v1/live/{room.public_id}/end").json()
    assert ended == {"code": 0, "message": "success", "data": {"room_id": room.public_id, "was_live": False}}
    deleted = client_for(user).delete(f"/api/v1/live/{room.public_id}")
    assert deleted.status_code == 200 and not Room.objects.filter(pk=room.pk).exists()


def test_openapi_schema_is_served(client_for):
    response = client_for().get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert "/api/v1/live/create" in schema["paths"] and "/api/v1/auth/login" in schema["paths"]


# -- who may join the room's call ---------------------------------------------------------------

def test_create_defaults_to_an_owner_only_call_and_takes_the_rule(client_for, user, other_user):
    data = client_for(user).post("/api/v1/live/create", {"title": "x"}, format="json").json()["data"]
    assert data["room"]["call_access"] == "invited" and data["room"]["call_invitees"] == []
    data = client_for(user).post("/api/v1/live/create", {"title": "y", "call_access": "users",
                                                         "call_invitees": ["bob"]}, format="json").json()["data"]
    assert data["room"]["call_access"] == "users" and data["room"]["call_invitees"] == ["bob"]
    stored = Room.objects.get(public_id=data["room"]["room_id"])
    assert stored.call_access == "users" and list(stored.call_invitees.all()) == [other_user]


@pytest.mark.parametrize("payload, field", [({"title": "x", "call_access": "everyone"}, "call_access"),
                                            ({"title": "x", "call_invitees": ["nobody"]}, "call_invitees")])
def test_create_refuses_a_bad_call_rule(client_for, user, payload, field):
    body = assert_error(client_for(user).post("/api/v1/live/create", payload, format="json"), 400)
    assert body["message"].startswith(f"{field}:") and field in body["errors"]
    assert not Room.objects.exists()


def test_owner_patches_the_call_rule_and_invitees(client_for, user, other_user, room_and_key):
    room, _ = room_and_key
    url = f"/api/v1/live/{room.public_id}"
    response = client_for(user).patch(url, {"call_access": "owner", "call_invitees": ["bob", "bob"]}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["code"] == 0 and body["message"] == "success"
    assert body["data"]["room_id"] == room.public_id
    assert body["data"]["call_access"] == "owner" and body["data"]["call_invitees"] == ["bob"]
    room.refresh_from_db()
    assert room.call_access == "owner" and list(room.call_invitees.all()) == [other_user]

    # one part at a time; the other stays
    data = client_for(user).patch(url, {"call_access": "users"}, format="json").json()["data"]
    assert data["call_access"] == "users" and data["call_invitees"] == ["bob"]
    data = client_for(user).patch(url, {"call_invitees": []}, format="json").json()["data"]
    assert data["call_access"] == "users" and data["call_invitees"] == []


def test_only_the_owner_sees_the_invitees(client_for, user, other_user, room_and_key):
    room, _ = room_and_key
    room.call_invitees.set([other_user])
    url = f"/api/v1/live/{room.public_id}"
    for client in (client_for(), client_for(other_user)):
        public = client.get(url).json()["data"]
        assert public["call_access"] == "invited" and "call_invitees" not in public
    assert client_for(user).get(url).json()["data"]["call_invitees"] == ["bob"]
    assert client_for(user).get("/api/v1/live/mine").json()["data"][0]["call_invitees"] == ["bob"]


@pytest.mark.parametrize("payload, field", [
    ({"call_access": "everyone"}, "call_access"),
    ({"call_access": None}, "call_access"),
    ({"call_invitees": ["bob", "nobody"]}, "call_invitees"),
    ({"call_invitees": "bob"}, "call_invitees"),
    ({"call_invitees": [{"username": "bob"}]}, "call_invitees"),
    ({"call_access": "users", "title": "renamed"}, "title"),
])
def test_patch_refuses_bad_values_naming_the_field(client_for, user, other_user, room_and_key, payload, field):
    room, _ = room_and_key
    body = assert_error(client_for(user).patch(f"/api/v1/live/{room.public_id}", payload, format="json"), 400)
    assert body["message"].startswith(f"{field}:") and field in body["errors"], body
    room.refresh_from_db()
    assert room.call_access == "invited" and room.title == "Alice live" and not room.call_invitees.exists()


def test_patch_with_nothing_to_change_is_400(client_for, user, room_and_key):
    room, _ = room_and_key
    body = assert_error(client_for(user).patch(f"/api/v1/live/{room.public_id}", {}, format="json"), 400)
    assert "call_access" in body["message"]
    assert_error(client_for(user).patch(f"/api/v1/live/{room.public_id}", [], format="json"), 400)


def test_patch_is_for_the_owner_only(client_for, user, other_user, room_and_key):
    from django.contrib.auth import get_user_model

    room, _ = room_and_key
    url = f"/api/v1/live/{room.public_id}"
    staff = get_user_model().objects.create_user(username="staff", password="s3cret-pass!", is_staff=True)
    for intruder in (other_user, staff):
        assert_error(client_for(intruder).patch(url, {"call_access": "users", "call_invitees": ["bob"]},
                                                format="json"), 403)
        # no username probing: 403 before the input is looked at
        assert_error(client_for(intruder).patch(url, {"call_invitees": ["nobody"]}, format="json"), 403)
    assert_error(client_for().patch(url, {"call_access": "users"}, format="json"), 401)
    assert_error(client_for(user).patch("/api/v1/live/nosuchroom", {"call_access": "users"}, format="json"), 404)
    room.refresh_from_db()
    assert room.call_access == "invited" and not room.call_invitees.exists()
