"""Real processes for tests: a throwaway PostgreSQL and Redis on loopback, and the service itself.

Everything binds 127.0.0.1 on a free port and is torn down by the context manager.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the process that started it dies, so a test run
    killed mid-test (a timeout, a namespace helper's SIGKILL) leaves no server or worker behind."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """Distinct free ports: all sockets are held open together so none is handed out twice."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def require_tool(path_or_name: str) -> str:
    """The tools tests need are installed by `make test`; a missing one is a loud failure."""
    found = shutil.which(path_or_name) or (path_or_name if os.path.exists(path_or_name) else None)
    if not found:
        raise RuntimeError(f"{path_or_name} is not installed: run `make test` (it installs the test tools)")
    return found


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def _pg_bin(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries are missing: run `make test` (it installs postgresql)")
    return candidates[-1]


class Postgres:
    """A private PostgreSQL cluster in a temp dir, run as the `postgres` system user."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mv-pg-"))
        self.data = self.dir / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/microvibe"

    def _as_postgres(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=60)

    def init(self) -> Postgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()
        self._as_postgres("psql", "-h", "127.0.0.1", "-p", str(self.port),
                          "-U", "postgres", "-c", "CREATE DATABASE microvibe")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-w", "-l",
                          str(self.dir / "log"), "start")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    server = Postgres().init()
    try:
        yield server
    finally:
        server.destroy()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([require_tool("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, preexec_fn=die_with_parent)
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


class Service:
    """`manage.py serve` as a child process on free ports; logs go to a file for failures."""

    def __init__(self, env: dict[str, str] | None = None, media: bool = True) -> None:
        self.port, self.rtmp_port, self.media_http_port = free_ports(3)
        self.dir = Path(tempfile.mkdtemp(prefix="mv-svc-"))
        self.log_path = self.dir / "service.log"
        self.env = {
            **os.environ,
            "VAR_DIR": str(self.dir),
            "SERVER_PORT": str(self.port),
            "RTMP_PORT": str(self.rtmp_port),
            "MEDIA_HTTP_PORT": str(self.media_http_port),
            "MEDIA_BIND": "127.0.0.1",
            "PUBLIC_HOST": "127.0.0.1",
            "MEDIA_PLANE_ENABLED": "1" if media else "0",
            "PYTHONUNBUFFERED": "1",
            "PUBLISH_GRACE": "0",  # a killed publisher ends its stream at once (tests/e2e/test_reconnect.py: the grace)
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None  # a Celery worker, when tasks go through Redis
        self._own_database = _isolate(self.env, self.dir.name.replace("-", "_").lower())

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True,
                              capture_output=True, text=True, timeout=120)

    def start(self) -> Service:
        self.manage("migrate", "--noinput")
        self.proc = subprocess.Popen([sys.executable, "manage.py", "serve", "--bind", "127.0.0.1"], cwd=ROOT,
                                     env=self.env, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT,
                                     preexec_fn=die_with_parent)
        if self.env.get("REDIS_URL") and self.env.get("CELERY_TASK_ALWAYS_EAGER", "0") != "1":
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "microvibe", "worker", "--pool", "solo", "--loglevel", "info",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"], cwd=ROOT, env=self.env,
                stdout=open(self.dir / "worker.log", "wb"), stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        try:
            wait_for_port(self.port, 30)
            if self.env["MEDIA_PLANE_ENABLED"] == "1":
                wait_for_port(self.rtmp_port, 30)
        except TimeoutError:
            self.stop()
            raise RuntimeError("service did not start:\n" + self.log()) from None
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def query(self, sql: str, *params) -> list[tuple]:
        """Read the service's database directly (SQLite file or its PostgreSQL database);
        write placeholders as %s."""
        url = self.env.get("DATABASE_URL", "")
        if url.startswith("postgres"):
            import psycopg

            with psycopg.connect(url) as conn:
                return [tuple(row) for row in conn.execute(sql, params).fetchall()]
        import sqlite3

        with sqlite3.connect(self.dir / "db.sqlite3", timeout=10) as db:
            return db.execute(sql.replace("%s", "?"), params).fetchall()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def worker_log(self) -> str:
        path = self.dir / "worker.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for proc in (self.proc, self.worker):
            if proc and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._own_database:
            _drop_database(*self._own_database)
        shutil.rmtree(self.dir, ignore_errors=True)


def _isolate(env: dict[str, str], name: str) -> tuple[str, str] | None:
    """When the suite runs on PostgreSQL + Redis (CI), give each service process its own
    database and Redis key prefix, so services never see each other's users or events."""
    env["REDIS_KEY_PREFIX"] = name
    url = env.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        return None
    import psycopg

    server_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env["DATABASE_URL"] = url.rsplit("/", 1)[0] + f"/{name}"
    return server_url, name


def _drop_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Coturn:
    """A coturn TURN server on 127.0.0.1 with REST-API credentials (`use-auth-secret`)."""

    def __init__(self, secret: str, realm: str = "microvibe.test") -> None:
        self.port, self.secret, self.realm = free_port(), secret, realm
        self.dir = Path(tempfile.mkdtemp(prefix="mv-turn-"))
        self.log_path = self.dir / "turn.log"

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def config(self) -> str:
        return "\n".join([
            "listening-ip=127.0.0.1", "relay-ip=127.0.0.1", f"listening-port={self.port}",
            # Relay ports below the ephemeral range, so no other socket in the namespace takes them.
            "min-port=21000", "max-port=21099",
            "use-auth-secret", f"static-auth-secret={self.secret}", f"realm={self.realm}",
            "allow-loopback-peers",  # the SFU's candidates are 127.0.0.1, which coturn refuses by default
            "no-tls", "no-dtls", "no-cli", "no-tcp-relay", "no-rfc5780", "simple-log", "verbose",
            # Everything coturn writes stays in the temp dir (defaults are /var/run, /var/lib/turn).
            f"log-file={self.log_path}", f"pidfile={self.dir / 'turn.pid'}", f"userdb={self.dir / 'turndb'}",
        ]) + "\n"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def coturn(secret: str) -> Iterator[Coturn]:
    server = Coturn(secret)
    (server.dir / "turnserver.conf").write_text(server.config())
    proc = subprocess.Popen([require_tool("/usr/bin/turnserver"), "-c", str(server.dir / "turnserver.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(server.port)  # coturn listens on TCP and UDP on the same port
        yield server
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(server.dir, ignore_errors=True)
