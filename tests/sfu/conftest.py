import pytest

from tests.support.api import create_room, register
from tests.support.procs import Service


@pytest.fixture(scope="module")
def service():
    with Service(media=False, env={"RTC_PEER_TIMEOUT": "3", "ROOM_MAX_PEERS": "4"}) as svc:
        yield svc


@pytest.fixture(scope="module")
def owner(service):
    token = register(service, "sfu-owner")
    return token


@pytest.fixture
def room(service, owner):
    return create_room(service, owner, "sfu room")
