"""The codec tests need no Django.

The suite-wide conftest has an autouse fixture that asks for pytest-django's
`settings`; this stand-in lets `pytest -p no:django tests/rtmp` run too.
"""

import types

import pytest


@pytest.fixture
def settings():
    return types.SimpleNamespace()
