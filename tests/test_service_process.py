"""The service as a real process: health against a real PostgreSQL and Redis (then with
PostgreSQL stopped), the API over HTTP, and the room socket over a real WebSocket."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
import websockets

from tests.support.api import api, register
from tests.support.procs import ROOT, Service, postgres, redis_server


@pytest.fixture(scope="module")
def pg_redis():
    with postgres() as pg, redis_server() as redis_url:
        yield pg, redis_url


def test_health_with_postgres_and_redis_then_postgres_stopped(pg_redis):
    pg, redis_url = pg_redis
    with Service({"DATABASE_URL": pg.url, "REDIS_URL": redis_url}, media=False) as service:
        status, body = service.get("/health")
        assert status == 200, service.log()
        assert json.loads(body) == {"code": 0, "message": "success",
                                    "data": {"database": "healthy", "redis": "healthy"}}
        pg.stop()
        try:
            status, body = service.get("/health")
            assert status == 503
            answer = json.loads(body)
            assert answer["code"] == 503 and "database" in answer["message"]
            assert answer["data"]["database"].startswith("unhealthy") and answer["data"]["redis"] == "healthy"
        finally:
            pg.start()
        status, _ = service.get("/health")
        assert status == 200


def test_api_and_room_socket_over_real_sockets(pg_redis):
    """Two users, a room, a chat message over a real WebSocket, with Redis as the channel layer."""
    pg, redis_url = pg_redis
    with Service({"DATABASE_URL": pg.url, "REDIS_URL": redis_url}, media=False) as service:
        alice, bob = register(service, "alice"), register(service, "bob")
        status, created = api(service, "/api/v1/live/create", {"title": "Real socket", "push_protocol": "rtmp"},
                              alice)
        assert status == 201
        room_id = created["data"]["room"]["room_id"]

        async def chat() -> list[dict]:
            base = f"ws://127.0.0.1:{service.port}/api/v1/live/ws?room_id={room_id}"
            async with websockets.connect(f"{base}&role=publisher", subprotocols=["bearer", alice]) as owner, \
                    websockets.connect(f"{base}&role=viewer&token={bob}") as viewer:
                joined = [json.loads(await owner.recv()), json.loads(await viewer.recv())]
                await viewer.send(json.dumps({"type": "chat", "text": "hello <world>"}))
                got = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for ws in (owner, viewer)]
                return joined + got

        joined_owner, joined_viewer, *chats = asyncio.run(chat())
        assert joined_owner["data"]["role"] == "publisher" and joined_viewer["data"]["user"] == "bob"
        for message in chats:
            assert message["type"] == "chat" and message["data"]["text"] == "hello &lt;world&gt;"


def test_refuses_to_start_without_secrets_when_debug_is_off():
    env = {"DEBUG": "0", "SECRET_KEY": "", "JWT_SECRET": "", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr
    env.update(SECRET_KEY="a" * 40, JWT_SECRET="")
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and "JWT_SECRET must be set" in result.stderr
    env.update(JWT_SECRET="b" * 40)
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
