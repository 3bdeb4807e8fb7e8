from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from live import services


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user(username="alice", password="s3cret-pass!")


@pytest.fixture
def other_user(db):
    return get_user_model().objects.create_user(username="bob", password="s3cret-pass!")


def token_for(user) -> str:
    return str(RefreshToken.for_user(user).access_token)


@pytest.fixture
def client_for():
    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
        return client

    return make


@pytest.fixture
def room_and_key(user):
    return services.room_create(owner=user, title="Alice live", push_protocol="rtmp")


@pytest.fixture(autouse=True)
def _tasks_run_here():
    """Celery tasks queued by the code under test run in this process, whatever the broker (a
    worker consuming the suite's Redis is tested end to end in tests/e2e)."""
    from microvibe.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before
