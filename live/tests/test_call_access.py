"""Who may join a room's call: the rule (selector), its writes (services) and the socket's facade."""
from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser

from live import media_api, selectors, services
from live.models import CallAccess, Room

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def people(user, other_user):
    """alice owns the room, bob is invited, carol is not, dave is invited but deactivated."""
    make = get_user_model().objects.create_user
    carol = make(username="carol", password="s3cret-pass!")
    dave = make(username="dave", password="s3cret-pass!", is_active=False)
    room, _ = services.room_create(owner=user, title="call room")
    room.call_invitees.set([other_user, dave])
    return room, {"owner": user, "invitee": other_user, "stranger": carol, "inactive": dave,
                  "anonymous": AnonymousUser(), "none": None}


EXPECTED = {
    CallAccess.OWNER: {"owner"},
    CallAccess.INVITED: {"owner", "invitee"},
    CallAccess.USERS: {"owner", "invitee", "stranger"},
}


@pytest.mark.parametrize("access", list(EXPECTED))
def test_call_join_allowed_follows_the_rooms_rule(people, access):
    room, users = people
    services.room_call_access_update(room=room, call_access=access)
    room = Room.objects.get(pk=room.pk)
    allowed = {who for who, user in users.items() if selectors.call_join_allowed(room=room, user=user)}
    assert allowed == EXPECTED[access]


def test_a_new_room_is_owner_only_until_someone_is_invited(user, other_user):
    room, _ = services.room_create(owner=user, title="fresh")
    assert room.call_access == CallAccess.INVITED and not room.call_invitees.exists()
    assert selectors.call_join_allowed(room=room, user=user)
    assert not selectors.call_join_allowed(room=room, user=other_user)


def test_an_unknown_rule_admits_only_the_owner(people):
    room, users = people
    Room.objects.filter(pk=room.pk).update(call_access="everyone")
    room = Room.objects.get(pk=room.pk)
    assert [w for w, u in users.items() if selectors.call_join_allowed(room=room, user=u)] == ["owner"]


def test_room_create_takes_the_rule_and_invitees(user, other_user):
    room, _ = services.room_create(owner=user, title="open", call_access=CallAccess.USERS,
                                   call_invitees=[other_user])
    assert room.call_access == "users" and list(room.call_invitees.all()) == [other_user]
    with pytest.raises(ValueError):
        services.room_create(owner=user, title="bad", call_access="everyone")
    assert not Room.objects.filter(title="bad").exists()


def test_room_call_access_update_replaces_invitees_and_leaves_what_is_not_given(people):
    room, users = people
    services.room_call_access_update(room=room, call_invitees=[users["stranger"]])
    room.refresh_from_db()
    assert room.call_access == CallAccess.INVITED
    assert list(room.call_invitees.all()) == [users["stranger"]]
    services.room_call_access_update(room=room, call_access=CallAccess.OWNER)
    room.refresh_from_db()
    assert room.call_access == CallAccess.OWNER and list(room.call_invitees.all()) == [users["stranger"]]
    services.room_call_access_update(room=room, call_invitees=[])
    assert not room.call_invitees.exists()
    with pytest.raises(ValueError):
        services.room_call_access_update(room=room, call_access="everyone")
    room.refresh_from_db()
    assert room.call_access == CallAccess.OWNER


def test_users_get_by_usernames_is_exact_and_dedupes(user, other_user):
    found, unknown = selectors.users_get_by_usernames(usernames=["bob", "alice", "bob", "Alice", "zed"])
    assert found == [other_user, user] and unknown == ["Alice", "zed"]


async def test_call_join_authorize(people):
    room, users = people
    await media_api.call_join_authorize(public_id=room.public_id, user=users["owner"])
    await media_api.call_join_authorize(public_id=room.public_id, user=users["invitee"])
    for who, reason in (("anonymous", "login_required"), ("none", "login_required"),
                        ("stranger", "not_invited"), ("inactive", "not_invited")):
        with pytest.raises(media_api.CallJoinRefused) as refused:
            await media_api.call_join_authorize(public_id=room.public_id, user=users[who])
        assert refused.value.reason == reason, who
    with pytest.raises(media_api.CallJoinRefused) as gone:
        await media_api.call_join_authorize(public_id="nosuchroom", user=users["owner"])
    assert gone.value.reason == "room_not_found"


async def test_call_join_authorize_refuses_anonymous_before_any_lookup(monkeypatch):
    def no_db(**kwargs):
        raise AssertionError("an anonymous join must not reach the database")

    monkeypatch.setattr(selectors, "room_get_by_public_id", no_db)
    with pytest.raises(media_api.CallJoinRefused) as refused:
        await media_api.call_join_authorize(public_id="anything", user=AnonymousUser())
    assert refused.value.reason == "login_required"


async def test_a_revoked_invitation_stops_the_next_join(people):
    room, users = people
    await media_api.call_join_authorize(public_id=room.public_id, user=users["invitee"])
    await sync_to_async(services.room_call_access_update)(room=room, call_invitees=[])
    with pytest.raises(media_api.CallJoinRefused):
        await media_api.call_join_authorize(public_id=room.public_id, user=users["invitee"])
