from __future__ import annotations

import pytest

from tests.support.api import create_room, register
from tests.support.procs import Service


@pytest.fixture(scope="module")
def service():
    with Service() as running:
        yield running


@pytest.fixture(scope="module")
def streamer_token(service):
    return register(service, "streamer")


@pytest.fixture
def room(service, streamer_token, request):
    """A fresh room per test: {'room': {...}, 'stream_key': ..., 'push_urls': {...}}."""
    return create_room(service, streamer_token, title=request.node.name[:100])
