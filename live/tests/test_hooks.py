"""Webhooks against a real HTTP receiver on loopback: signed bodies without the stream key, an
on_publish hook that refuses or never answers, notifications retried until the receiver is back."""
from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async

from live import hooks, media_api, services
from live.models import HookDelivery, HookStatus, LiveSession
from tests.support.hook_receiver import HookReceiver

pytestmark = pytest.mark.django_db(transaction=True)
SECRET = "hook-secret-for-tests"


@pytest.fixture
def receiver():
    server = HookReceiver()
    yield server
    server.close()


@pytest.fixture
def hook_settings(settings, receiver):
    settings.HOOK_SECRET = SECRET
    settings.HOOK_TIMEOUT = 0.5
    settings.HOOK_RETRY_BASE = 0.05
    settings.HOOK_RETRIES = 3
    for event, name in hooks.SETTINGS.items():
        setattr(settings, name, receiver.url(event))
    return settings


@pytest.fixture
def delivered_here(monkeypatch):
    """Notifications are tried by the test itself (`run_deliveries`), not by a thread or Celery."""
    queued: list[int] = []
    monkeypatch.setattr(hooks, "deliver_later", lambda pk, delay: queued.append(pk))
    return queued


def run_deliveries(queued: list[int]) -> None:
    while queued:
        pk = queued.pop(0)
        if hooks.deliver(pk) is not None:
            queued.append(pk)


async def test_on_publish_is_asked_signed_and_without_the_stream_key(hook_settings, receiver, room_and_key,
                                                                    delivered_here):
    room, key = room_and_key
    grant = await media_api.publish_authorize(stream_key=key, protocol="rtmp", client_addr="127.0.0.1:5000")
    [asked] = receiver.of("on_publish")
    assert asked.signed_with(SECRET) and not asked.signed_with("another secret")
    assert asked.json | {"time": None} == {"event": "on_publish", "room_id": room.public_id, "session_id": None,
                                           "protocol": "rtmp", "client_addr": "127.0.0.1:5000", "time": None}
    assert key.encode() not in asked.body and room.stream_key_hash.encode() not in asked.body
    await media_api.publish_ended(session_id=grant.session_id, reason="publisher_left", bytes_received=10,
                                  peak_viewers=2)
    await sync_to_async(run_deliveries)(delivered_here)
    [done] = receiver.of("on_publish_done")
    assert done.signed_with(SECRET) and key.encode() not in done.body
    assert (done.json["session_id"], done.json["reason"], done.json["client_addr"]) == \
        (grant.session_id, "publisher_left", "127.0.0.1:5000")


@pytest.mark.parametrize("answer", [403, None])
async def test_an_on_publish_hook_that_refuses_or_never_answers_refuses_the_publish(hook_settings, receiver,
                                                                                   room_and_key, answer):
    room, key = room_and_key
    receiver.answers["on_publish"] = answer
    started = time.monotonic()
    with pytest.raises(media_api.PublishRefused) as refused:
        await media_api.publish_authorize(stream_key=key, protocol="rtmp")
    assert refused.value.reason == "hook_refused"
    assert ("403" if answer else "no answer") in refused.value.message
    assert time.monotonic() - started < hook_settings.HOOK_TIMEOUT + 1.0
    assert not await LiveSession.objects.filter(room=room).aexists()  # nothing opened


def test_a_room_override_replaces_the_setting_and_empty_turns_it_off(hook_settings, receiver, room_and_key):
    room, _ = room_and_key
    assert hooks.hook_url("on_publish", room.hooks) == receiver.url("on_publish")
    assert hooks.hook_url("on_publish", {"on_publish": "http://127.0.0.1:9/x"}) == "http://127.0.0.1:9/x"
    assert hooks.hook_url("on_publish", {"on_publish": ""}) == ""


def test_a_notification_to_a_receiver_that_is_down_is_retried_until_it_is_back(hook_settings, receiver,
                                                                               room_and_key, delivered_here):
    room, key = room_and_key
    receiver.answers["on_publish_done"] = [503, 503, 200]
    session = services.publish_start(stream_key=key, protocol="rtmp")
    services.session_end(session_id=session.pk, reason="publisher_left")
    [delivery] = HookDelivery.objects.all()
    assert hooks.deliver(delivery.pk) == pytest.approx(0.05)  # first try: 503, next in HOOK_RETRY_BASE
    assert hooks.deliver(delivery.pk) == pytest.approx(0.10)  # doubled
    assert hooks.deliver(delivery.pk) is None
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status) == (HookStatus.DELIVERED, 3, 200)
    assert len(receiver.of("on_publish_done")) == 3 and all(r.signed_with(SECRET) for r in receiver.received)


def test_a_notification_fails_visibly_after_its_retries(hook_settings, receiver, room_and_key, delivered_here):
    room, key = room_and_key
    receiver.answers["on_publish_done"] = 500
    session = services.publish_start(stream_key=key, protocol="rtmp")
    services.session_end(session_id=session.pk, reason="publisher_left")
    run_deliveries(delivered_here)
    delivery = HookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.error) == (HookStatus.FAILED, 4, "answered 500")


def test_without_hooks_nothing_is_written(settings, room_and_key):
    room, key = room_and_key
    session = services.publish_start(stream_key=key, protocol="rtmp")
    services.session_end(session_id=session.pk, reason="publisher_left")
    assert not HookDelivery.objects.exists()
