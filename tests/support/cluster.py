"""The production layout without Docker, on loopback: PostgreSQL, Redis, migrations, one web
process (`serve --no-media`), media nodes (`serve`), a Celery worker and beat, and Debian's nginx
with configs/nginx/microvibe.conf.template rendered as the nginx image renders it (envsubst)."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .procs import ROOT, die_with_parent, free_ports, postgres, redis_server, require_tool, wait_for_port

TEMPLATE = ROOT / "configs" / "nginx" / "microvibe.conf.template"


def render(template: str, values: dict[str, str]) -> str:
    """envsubst as the nginx image runs it: only the given ${NAME}s are replaced."""
    return re.sub(r"\$\{([A-Z0-9_]+)\}", lambda m: values.get(m[1], m[0]), template)


@dataclass
class Node:
    node_id: str
    app_port: int
    http_port: int
    rtmp_port: int
    proc: subprocess.Popen | None = None


@dataclass
class Cluster:
    dir: Path
    env: dict[str, str]
    web_port: int
    https_port: int
    http_port: int
    nodes: dict[str, Node] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "wb")
        proc = subprocess.Popen(args, cwd=ROOT, env={**self.env, **(env or {})}, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        self.procs.append(proc)
        return proc

    def manage(self, *args: str) -> str:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True,
                              capture_output=True, text=True, timeout=120).stdout

    def query(self, sql: str, *params) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.env["DATABASE_URL"]) as conn:
            return [tuple(row) for row in conn.execute(sql, params).fetchall()]

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                         for path in sorted(self.dir.glob("*.log")))

    def kill(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)


def _node_env(cluster: Cluster, node: Node) -> dict[str, str]:
    return {"MEDIA_NODE_ID": node.node_id, "SERVER_PORT": str(node.app_port), "MEDIA_HTTP_PORT": str(node.http_port),
            "RTMP_PORT": str(node.rtmp_port), "MEDIA_PUBLIC_RTMP": f"rtmp://127.0.0.1:{node.rtmp_port}/live",
            "MEDIA_PUBLIC_HTTP": f"{cluster.base}/node/{node.node_id}"}


def _nginx_conf(cluster: Cluster, hls_root: Path, certs: Path) -> Path:
    n1 = cluster.nodes["media-1"]
    n2 = cluster.nodes.get("media-2", n1)  # one node: the template's second pair names it again
    site = render(TEMPLATE.read_text(), {
        "SERVER_NAME": "127.0.0.1", "WEB_UPSTREAM": f"127.0.0.1:{cluster.web_port}",
        "MEDIA_1_HTTP": f"127.0.0.1:{n1.http_port}", "MEDIA_1_APP": f"127.0.0.1:{n1.app_port}",
        "MEDIA_2_HTTP": f"127.0.0.1:{n2.http_port}", "MEDIA_2_APP": f"127.0.0.1:{n2.app_port}",
        "RESOLVER": "127.0.0.1",  # never asked here: the nodes are named by address
        "HLS_ROOT": str(hls_root), "TLS_CERT": str(certs / "tls.crt"), "TLS_KEY": str(certs / "tls.key"),
        "LISTEN_HTTP": f"127.0.0.1:{cluster.http_port}", "LISTEN_HTTPS": f"127.0.0.1:{cluster.https_port}"})
    (cluster.dir / "site.conf").write_text(site)
    temp = cluster.dir / "nginx-temp"
    temp.mkdir()
    # The main file stands in for the image's /etc/nginx/nginx.conf (the template is its http part).
    main = f"""user root; daemon off; worker_processes 1; pid {cluster.dir}/nginx.pid;
error_log {cluster.dir}/nginx-error.log warn;
events {{ worker_connections 512; }}
http {{
    include /etc/nginx/mime.types;
    access_log {cluster.dir}/nginx-access.log;
    client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy; fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;
    include {cluster.dir}/site.conf;
}}
"""
    path = cluster.dir / "nginx.conf"
    path.write_text(main)
    return path


def _wait_healthy(url: str, timeout: float = 30) -> None:
    import ssl

    context = ssl._create_unverified_context()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=3, context=context) as response:
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise TimeoutError(f"{url} not healthy")


def _wait_heartbeats(c: Cluster, timeout: float = 15) -> None:
    """Every node's first heartbeat is in Redis (the allocation knows them all)."""
    import redis

    client = redis.Redis.from_url(c.env["REDIS_URL"])
    keys = [f"{c.env['REDIS_KEY_PREFIX']}:1:live:stat:node:{node}" for node in c.nodes]
    deadline = time.monotonic() + timeout
    while client.exists(*keys) < len(keys):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no heartbeat from every node: {keys}")
        time.sleep(0.1)


def production_env(pg_url: str, redis_url: str, var: Path) -> dict[str, str]:
    return {**os.environ, "DEBUG": "0", "SECRET_KEY": "prod-test-secret-key-0123456789",
            "JWT_SECRET": "prod-test-jwt-secret-0123456789", "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": pg_url, "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": "prod", "VAR_DIR": str(var),
            "HLS_PATH": str(var / "hls"), "RECORDINGS_PATH": str(var / "recordings"), "MEDIA_BIND": "127.0.0.1",
            "PUBLIC_HOST": "127.0.0.1", "RTC_LISTEN_IPS": "127.0.0.1", "NODE_TIMEOUT": "6",
            "CELERY_TASK_ALWAYS_EAGER": "0", "PYTHONUNBUFFERED": "1",
            # a killed publisher ends its stream at once (the grace has its own test); LL-HLS through nginx
            "PUBLISH_GRACE": "0", "LLHLS_ENABLED": "1"}


@contextlib.contextmanager
def cluster(nodes: int = 2, env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """The layout with `nodes` media nodes (1 or 2: the template names two), extra `env` for all."""
    nginx = require_tool("/usr/sbin/nginx")
    work = Path(tempfile.mkdtemp(prefix="mv-prod-"))
    with postgres() as pg, redis_server() as redis_url:
        web_port, https_port, http_port, *ports = free_ports(9)
        c = Cluster(work, {**production_env(pg.url, redis_url, work / "var"), **(env or {})}, web_port, https_port,
                    http_port)
        for index, node_id in enumerate(("media-1", "media-2")[:nodes]):
            c.nodes[node_id] = Node(node_id, *ports[index * 3:index * 3 + 3])
        c.env.update({"STREAMING_HLS_SERVER": f"{c.base}/hls", "STREAMING_FLV_SERVER": f"{c.base}/flv",
                      "STREAMING_WHIP_SERVER": f"{c.base}/whip", "STREAMING_WHEP_SERVER": f"{c.base}/whep"})
        try:
            c.manage("migrate", "--noinput")
            certs = work / "certs"
            # The certificate nginx gets at first start in production (compose's `certs` service).
            subprocess.run([sys.executable, "-m", "microvibe.selfsigned", str(certs), "--host", "127.0.0.1"], cwd=ROOT,
                           env=c.env, check=True, capture_output=True, timeout=60)
            c.spawn("web", [sys.executable, "manage.py", "serve", "--no-media", "--bind", "127.0.0.1",
                            "--port", str(web_port)], {"MEDIA_PLANE_ENABLED": "0"})
            for node in c.nodes.values():
                node.proc = c.spawn(node.node_id, [sys.executable, "manage.py", "serve", "--bind", "127.0.0.1",
                                                   "--port", str(node.app_port)], _node_env(c, node))
            c.spawn("worker", [sys.executable, "-m", "celery", "-A", "microvibe", "worker", "--pool", "solo",
                               "-l", "info", "--without-gossip", "--without-mingle", "--without-heartbeat"])
            c.spawn("beat", [sys.executable, "-m", "celery", "-A", "microvibe", "beat", "-l", "info",
                             "-s", str(work / "beat-schedule")])
            c.spawn("nginx", [nginx, "-c", str(_nginx_conf(c, work / "var" / "hls", certs))])
            for port in (web_port, *(n.rtmp_port for n in c.nodes.values())):
                wait_for_port(port, 30)
            _wait_healthy(f"{c.base}/health")
            for node in c.nodes.values():
                _wait_healthy(f"{c.base}/node/{node.node_id}/health")
            _wait_heartbeats(c)
            yield c
        except BaseException:
            print(c.logs(), file=sys.stderr)
            raise
        finally:
            for proc in reversed(c.procs):
                if proc.poll() is None:
                    proc.terminate()
            for proc in c.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                if proc.poll() is None:
                    proc.kill()
            shutil.rmtree(work, ignore_errors=True)
