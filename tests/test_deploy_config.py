"""The production deployment's files, checked without Docker (Docker is not on the development machines).

- docker-compose.yml (read with PyYAML, anchors and merge keys resolved as Compose does): health checks,
  dependencies, volumes, images, the media nodes' ids and ports, secrets, every ${VAR} defined in
  configs/env.example, nginx's template; `docker compose config -q` too where a docker binary exists.
- The health checks' and start scripts' own commands, run for real against the tools they call: the Daphne
  check against `manage.py serve`, the worker's `celery inspect ping` against a worker, beat's file age,
  Redis's password file and ping, coturn's generated config and relay policy (relays to the media nodes'
  address only).
- The settings refuse CHANGE_ME secrets with DEBUG=0 (configs/env.example as shipped does not start).
- microvibe.selfsigned: a certificate for nginx when none is there, never overwriting one.
"""
from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from cryptography import x509

from microvibe.settings.secrets_check import secret_problems
from tests.support.procs import ROOT, Service, free_port, redis_server, require_tool, wait_for_port

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "configs" / "env.example"
NGINX_TEMPLATE = ROOT / "configs" / "nginx" / "microvibe.conf.template"
SECRETS = ("SECRET_KEY", "JWT_SECRET", "DATABASE_PASSWORD", "REDIS_PASSWORD", "RTC_TURN_SECRET", "METRICS_TOKEN",
           "HOOK_SECRET")
APP_SERVICES = ("web", "media-1", "media-2", "worker", "beat")
SECRET_KEY_RE = re.compile(r"(PASSWORD|SECRET|TOKEN|SECRET_KEY|ACCESS_KEY)$")  # TLS_KEY is a path
INTERPOLATION_RE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


# -- reading the files ------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def strings(node: object) -> list[str]:
    """Every string of a parsed YAML document, keys included (what Compose interpolates)."""
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in (*strings(key), *strings(value))]
    if isinstance(node, list):
        return [text for item in node for text in strings(item)]
    return [node] if isinstance(node, str) else []


def one_shot(service: dict) -> bool:
    return service.get("restart") == "no"


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment as a mapping (KEY: value), so anchors merge"
    return {key: str(value) for key, value in env.items()}


def compose_value(text: str) -> str:
    """A Compose string as the container sees it: `$$` is a literal `$`."""
    return text.replace("$$", "$")


def script(service: dict, key: str) -> str:
    """The shell script of an `entrypoint`/`command` of the form [sh|bash, -c, SCRIPT]."""
    shell, flag, body = service[key][:3]
    assert shell in ("sh", "bash") and flag == "-c"
    return compose_value(body)


def media_nodes() -> dict[str, dict]:
    return {name: s for name, s in services().items() if "MEDIA_NODE_ID" in environment(s)}


def port_range(node: dict) -> range:
    env = environment(node)
    return range(int(env["RTC_MIN_PORT"]), int(env["RTC_MAX_PORT"]) + 1)


# -- docker-compose.yml -----------------------------------------------------------------------------


def test_every_long_running_service_has_a_health_check_and_restarts():
    for name, service in services().items():
        if one_shot(service):
            assert "healthcheck" not in service, name
            continue
        assert service.get("restart") == "unless-stopped", name
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name} has no health check"


def test_dependencies_wait_for_health_or_completion_of_services_that_exist():
    all_services = services()
    for name, service in all_services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on with conditions, not a list"
        for target, how in depends.items():
            assert target in all_services, f"{name} depends on a missing service {target}"
            condition = how.get("condition")
            if condition == "service_healthy":
                assert "healthcheck" in all_services[target], f"{name} waits for {target}'s health: it has none"
            else:
                assert condition == "service_completed_successfully" and one_shot(all_services[target]), (name, target)
    for name in APP_SERVICES:
        assert all_services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"}, "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"}}, name
    assert all_services["nginx"]["depends_on"]["certs"] == {"condition": "service_completed_successfully"}


def test_volumes_are_named_and_declared():
    document = compose()
    declared = set(document["volumes"])
    used = set()
    for name, service in document["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts an undeclared volume {source}"
                used.add(source)
    assert used == declared == {"postgres_data", "redis_data", "hls", "recordings", "beat", "certs"}


def test_images_and_commands_are_the_production_design():
    s = services()
    assert s["postgres"]["image"] == "postgres:16" and s["redis"]["image"] == "redis:7"
    assert "appendonly yes" in script(s["redis"], "command")
    assert s["nginx"]["image"] == "nginx:1.27" and s["coturn"]["image"].startswith("coturn/coturn:")
    assert s["web"]["command"] == ["python", "manage.py", "serve", "--no-media", "--port", "8080"]
    assert environment(s["web"])["MEDIA_PLANE_ENABLED"] == "0"
    assert s["worker"]["command"][:5] == ["celery", "-A", "microvibe", "worker", "-l"]
    beat = s["beat"]["command"]
    assert beat[:5] == ["celery", "-A", "microvibe", "beat", "-l"]
    assert any(v.split(":")[1] == str(Path(beat[beat.index("-s") + 1]).parent) for v in s["beat"]["volumes"])
    assert s["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    for name in ("migrate", *APP_SERVICES):
        assert s[name]["env_file"] == "configs/.env", name


def test_media_nodes_have_their_own_id_ports_and_addresses():
    document = compose()
    nodes = media_nodes()
    assert {"media-1", "media-2"} <= set(nodes)  # a third one (README) keeps every rule below
    ipam = document["networks"]["default"]["ipam"]["config"][0]
    subnet, dynamic = ipaddress.ip_network(ipam["subnet"]), ipaddress.ip_network(ipam["ip_range"])
    ids, rtmp_ports, addresses, ranges = set(), set(), set(), []
    for name, node in nodes.items():
        env = environment(node)
        assert env["MEDIA_NODE_ID"] == name and node["command"] == ["python", "manage.py", "serve", "--port", "8090"]
        assert env["SERVER_PORT"] == "8090" and env["MEDIA_HTTP_PORT"] == "8081" and env["RTMP_PORT"] == "1935"
        ids.add(env["MEDIA_NODE_ID"])
        # WebRTC: the range published 1:1 as UDP, bound on the node's own fixed address (see the compose file).
        rtc = port_range(node)
        assert f"{rtc.start}-{rtc.stop - 1}:{rtc.start}-{rtc.stop - 1}/udp" in node["ports"], name
        ranges.append(rtc)
        address = ipaddress.ip_address(env["RTC_LISTEN_IPS"])
        assert node["networks"]["default"]["ipv4_address"] == str(address), name
        assert address in subnet and address not in dynamic, f"{name}: Docker may hand {address} to another container"
        addresses.add(address)
        # RTMP: the host port published for the node's 1935 is the one its public URL names.
        [rtmp] = [p for p in node["ports"] if p.endswith(f":{env['RTMP_PORT']}")]
        host_port = rtmp.split(":")[0]
        assert env["MEDIA_PUBLIC_RTMP"] == f"rtmp://${{PUBLIC_HOST}}:{host_port}/live", name
        rtmp_ports.add(host_port)
        assert env["MEDIA_PUBLIC_HTTP"] == f"https://${{PUBLIC_HOST}}/node/{name}", name
        assert set(node["volumes"]) >= {"hls:/var/lib/microvibe/hls", "recordings:/var/lib/microvibe/recordings"}
    assert len(ids) == len(rtmp_ports) == len(addresses) == len(nodes)
    assert sum(len(r) for r in ranges) == len(set().union(*ranges)), "RTC port ranges overlap"
    assert [(r.start, r.stop - 1) for r in map(port_range, (nodes["media-1"], nodes["media-2"]))] == [
        (40000, 40099), (40100, 40199)]
    # nginx reaches node n as media-n, looked up per request (so it need not wait for the nodes).
    assert {f"media-{i}" for i in range(1, len(nodes) + 1)} == set(nodes)
    template = NGINX_TEMPLATE.read_text()
    nginx_env = environment(document["services"]["nginx"])
    assert nginx_env.get("RESOLVER") == "127.0.0.11"
    for name in nodes:
        index = name.split("-")[1]
        assert nginx_env[f"MEDIA_{index}_HTTP"] == f"{name}:8081" and nginx_env[f"MEDIA_{index}_APP"] == f"{name}:8090"
        assert f"{name} ${{MEDIA_{index}_HTTP}};" in template and f"{name} ${{MEDIA_{index}_APP}};" in template


def test_no_secret_is_written_in_the_compose_file():
    assert "CHANGE_ME" not in yaml.safe_dump(compose())  # the values, comments aside
    for name, service in services().items():
        for key, value in environment(service).items():
            if SECRET_KEY_RE.search(key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:\?[^}]*)?\}", value), f"{name}: {key} must come from configs/.env"
    # Secrets reach coturn and Redis at start, from their environment: never as text in the file or in argv.
    assert "static-auth-secret=$RTC_TURN_SECRET" in script(services()["coturn"], "entrypoint")
    assert "requirepass %s" in script(services()["redis"], "command")


def test_every_interpolated_variable_is_defined_in_env_example_and_secrets_are_placeholders():
    example = env_example()
    used = {name for text in strings(compose()) for name in INTERPOLATION_RE.findall(text)}  # comments aside
    assert used and used <= set(example), f"not in configs/env.example: {sorted(used - set(example))}"
    assert example["DEBUG"] == "0"
    for name in SECRETS:
        assert example[name] == "CHANGE_ME", name
    # Nothing else in the file looks like a secret with a real value.
    for name, value in example.items():
        if SECRET_KEY_RE.search(name) and value:
            assert value == "CHANGE_ME", name
    assert example["PUBLIC_HOST"] in example["ALLOWED_HOSTS"].split(",")  # the health checks' Host


def test_nginx_gets_the_template_its_variables_the_hls_volume_read_only_and_the_certificates():
    nginx = services()["nginx"]
    volumes = nginx["volumes"]
    assert "./configs/nginx/microvibe.conf.template:/etc/nginx/templates/default.conf.template:ro" in volumes
    assert "hls:/var/lib/microvibe/hls:ro" in volumes and "certs:/etc/nginx/certs:ro" in volumes
    env = environment(nginx)
    assert env["SERVER_NAME"].startswith("${PUBLIC_HOST") and env["WEB_UPSTREAM"] == "web:8080"
    for node in media_nodes():
        index = node.removeprefix("media-")
        assert env[f"MEDIA_{index}_HTTP"] == f"{node}:8081" and env[f"MEDIA_{index}_APP"] == f"{node}:8090"
    assert env["HLS_ROOT"] == "/var/lib/microvibe/hls" and (env["LISTEN_HTTP"], env["LISTEN_HTTPS"]) == ("80", "443")
    assert sorted(nginx["ports"]) == ["443:443", "80:80"]
    certs = services()["certs"]
    assert certs["volumes"] == ["certs:/var/lib/microvibe/certs"] and certs["command"][:4] == [
        "python", "-m", "microvibe.selfsigned", "/var/lib/microvibe/certs"]
    assert (env["TLS_CERT"], env["TLS_KEY"]) == ("/etc/nginx/certs/tls.crt", "/etc/nginx/certs/tls.key")
    # The template (written by the cluster work) exists and needs no variable nginx is not given.
    assert NGINX_TEMPLATE.is_file(), f"{NGINX_TEMPLATE} is missing"
    needed = set(re.findall(r"\$\{([A-Z0-9_]+)\}", NGINX_TEMPLATE.read_text()))
    assert needed <= set(env), f"the template needs {sorted(needed - set(env))}"


def test_the_image_runs_as_a_user_and_its_postgres_client_matches_the_server():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim-bookworm$", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "collectstatic" in dockerfile and "ffmpeg" in dockerfile
    major = services()["postgres"]["image"].split(":")[1]
    assert re.search(rf"^ARG PG_MAJOR={major}$", dockerfile, re.M), "pg_dump must be as new as the server"


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return [docker, "compose"]
    return None


def test_docker_compose_accepts_the_file_where_docker_compose_exists(tmp_path):
    # Only where Docker Compose exists (not on the development machines, whose docker CLI, if any, has no
    # compose plugin): the structure tests above are the checks everywhere; this adds Compose's own parser
    # and interpolation. It is not a required tool skipped: nothing here needs Docker to pass.
    cli = _compose_cli()
    if cli is None:
        return
    project = tmp_path / "project"
    shutil.copytree(ROOT / "configs", project / "configs")
    shutil.copy(COMPOSE_FILE, project / "docker-compose.yml")
    (project / "configs" / ".env").write_text(ENV_EXAMPLE.read_text())
    run = [*cli, "--project-directory", str(project), "-f", str(project / "docker-compose.yml")]
    done = subprocess.run([*run, "config", "-q"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "see README Production" in done.stderr  # no .env link: a clear stop
    (project / ".env").symlink_to("configs/.env")
    for extra in ([], ["--profile", "tools"]):
        done = subprocess.run([*run, *extra, "config", "-q"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr


# -- the health checks and start scripts, run ---------------------------------------------------------


def healthcheck(name: str) -> list[str]:
    kind, *args = services()[name]["healthcheck"]["test"]
    return ["sh", "-c", compose_value(args[0])] if kind == "CMD-SHELL" else [compose_value(a) for a in args]


def test_daphne_health_check_passes_on_a_healthy_service_and_needs_the_public_host():
    host = "live.example.test"
    env = {"DEBUG": "0", "SECRET_KEY": secrets.token_hex(16), "JWT_SECRET": secrets.token_hex(16),
           "ALLOWED_HOSTS": host}
    check = healthcheck("web")
    assert healthcheck("media-1") == check == healthcheck("media-2")
    with Service(env, media=False) as service:
        probe = {**os.environ, "SERVER_PORT": str(service.port), "PUBLIC_HOST": host}
        done = subprocess.run(check, env=probe, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        done = subprocess.run(check, env={**probe, "PUBLIC_HOST": "not-allowed.test"}, capture_output=True,
                              text=True, timeout=30)
        assert done.returncode != 0  # a Host Django refuses fails the check: it tests what nginx sends


def test_worker_health_check_pings_the_worker_of_this_host(tmp_path):
    with redis_server() as redis_url:
        # As in the image: celery on PATH, HOSTNAME set (Docker sets it; the worker's default name uses it).
        env = {**os.environ, "REDIS_URL": redis_url, "HOSTNAME": socket.gethostname(), "VAR_DIR": str(tmp_path),
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        check = healthcheck("worker")
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "microvibe", "worker", "--pool", "solo",
                                   "-l", "warning"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while (done := subprocess.run(check, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
                   ).returncode != 0 and time.monotonic() < deadline:
                time.sleep(1)
            assert done.returncode == 0, done.stderr
        finally:
            worker.terminate()
            worker.wait(20)
        done = subprocess.run(check, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0  # no worker: unhealthy


def test_beat_health_check_follows_the_schedule_file_age(tmp_path):
    path = "/var/lib/microvibe/beat/celerybeat-schedule"
    [command] = [arg for arg in healthcheck("beat") if path in arg]
    local = healthcheck("beat")[:-1] + [command.replace(path, str(tmp_path / "celerybeat-schedule"))]
    assert subprocess.run(local, timeout=30).returncode == 1  # no file yet
    schedule = tmp_path / "celerybeat-schedule.db"
    schedule.write_bytes(b"x")
    assert subprocess.run(local, timeout=30).returncode == 0
    old = time.time() - 11 * 60
    os.utime(schedule, (old, old))
    assert subprocess.run(local, timeout=30).returncode == 1


def _shim(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def test_redis_start_script_keeps_the_password_in_a_private_file_and_the_health_check_uses_it(tmp_path):
    redis = services()["redis"]
    password, port = secrets.token_hex(16), free_port()
    body = script(redis, "command").replace("/tmp/redis", str(tmp_path / "redis"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # The image's entrypoint starts redis-server with the file; here on loopback, data in the temp dir.
    _shim(bin_dir, "docker-entrypoint.sh", f'shift; exec {require_tool("redis-server")} "$@" --port {port} '
                                           f'--bind 127.0.0.1 --dir {tmp_path} --save ""\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "REDIS_PASSWORD": password}
    proc = subprocess.Popen(["sh", "-c", body], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        conf = tmp_path / "redis" / "redis.conf"
        assert conf.stat().st_mode & 0o077 == 0 and password in conf.read_text()
        check = [a.replace("redis-cli ping", f"redis-cli -p {port} ping") for a in healthcheck("redis")]
        assert subprocess.run(check, env=env, timeout=30).returncode == 0
        assert subprocess.run(check, env={**env, "REDIS_PASSWORD": "wrong"}, timeout=30).returncode != 0
    finally:
        proc.terminate()
        proc.wait(10)


def _uclient(port: int, secret: str, peer: str, peer_port: int) -> str:
    """turnutils_uclient through coturn with REST credentials (-W) to a peer; its output."""
    done = subprocess.run([require_tool("/usr/bin/turnutils_uclient"), "-W", secret, "-u", "anonymous", "-p",
                           str(port), "-e", peer, "-r", str(peer_port), "-n", "3", "-m", "1", "-l", "100",
                           "-X", "127.0.0.1"], capture_output=True, text=True, timeout=30)
    return done.stdout + done.stderr


def test_coturn_start_script_and_config_relay_only_to_the_media_nodes(tmp_path):
    coturn = services()["coturn"]
    assert coturn["network_mode"] == "host"
    secret, port, peer_port = secrets.token_hex(16), free_port(), free_port()
    body = (script(coturn, "entrypoint").replace("/etc/coturn/turnserver.conf", str(ROOT / "configs/turnserver.conf"))
            .replace("/tmp/turnserver.conf", str(tmp_path / "turnserver.conf")))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # coturn on loopback here (the announced address 127.0.0.1 stands for the server's public one).
    _shim(bin_dir, "turnserver", f'exec {require_tool("/usr/bin/turnserver")} "$@" --listening-ip=127.0.0.1 '
                                 f"--relay-ip=127.0.0.1 --listening-port={port} --allow-loopback-peers "
                                 f"--pidfile={tmp_path}/turn.pid --userdb={tmp_path}/turndb\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RTC_TURN_SECRET": secret,
           "PUBLIC_HOST": "live.example.test", "RTC_ANNOUNCED_IP": "127.0.0.1"}
    turn = subprocess.Popen(["bash", "-c", body], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peer = subprocess.Popen([require_tool("/usr/bin/turnutils_peer"), "-L", "127.0.0.1", "-L", "127.0.0.2",
                             "-p", str(peer_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        conf = tmp_path / "turnserver.conf"
        assert conf.stat().st_mode & 0o077 == 0 and f"static-auth-secret={secret}" in conf.read_text()
        check = [a.replace("/3478", f"/{port}") for a in healthcheck("coturn")]
        assert subprocess.run(check, timeout=30).returncode == 0
        relayed = _uclient(port, secret, "127.0.0.1", peer_port)
        assert "tot_recv_msgs=6" in relayed, relayed[-1500:]  # to the nodes' address: relayed both ways
        refused = _uclient(port, secret, "127.0.0.2", peer_port)
        assert "403 (Forbidden IP)" in refused, refused[-1500:]  # anywhere else: refused
        assert "Cannot complete Allocation" in _uclient(port, "not-the-secret", "127.0.0.1", peer_port)  # bad secret
    finally:
        for proc in (turn, peer):
            proc.terminate()
            proc.wait(10)


# -- secrets: refused with DEBUG=0 ------------------------------------------------------------------


def django_setup(env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith(("DATABASE_", "REDIS_"))}
    return subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT,
                          env={**base, "DJANGO_SETTINGS_MODULE": "microvibe.settings", **env},
                          capture_output=True, text=True, timeout=60)


def test_change_me_secrets_are_refused_with_debug_off_naming_every_one():
    placeholders = {name: "CHANGE_ME" for name in SECRETS} | {"RECORDINGS_S3_SECRET_KEY": "change_me"}
    done = django_setup({"DEBUG": "0", **placeholders})
    assert done.returncode != 0 and "ImproperlyConfigured" in done.stderr
    for name in placeholders:
        assert f"{name} is still the CHANGE_ME placeholder" in done.stderr, name
    assert "CHANGE_ME" not in done.stderr.split("ImproperlyConfigured")[0]  # values never printed

    real = {name: secrets.token_hex(32) for name in placeholders}
    done = django_setup({"DEBUG": "0", **real})
    assert done.returncode == 0, done.stderr
    done = django_setup({"DEBUG": "1", **placeholders})  # development: not refused
    assert done.returncode == 0, done.stderr


def test_env_example_as_shipped_does_not_start_and_does_once_filled_in():
    example = env_example()
    done = django_setup(example)
    assert done.returncode != 0
    for name in SECRETS:
        assert name in done.stderr, name
    filled = {name: secrets.token_hex(32) if value == "CHANGE_ME" else value for name, value in example.items()}
    done = django_setup(filled)
    assert done.returncode == 0, done.stderr


def test_secret_problems_name_weak_and_placeholder_values_only():
    insecure = "dev-default"
    problems = secret_problems({"SECRET_KEY": "", "JWT_SECRET": "short", "HOOK_SECRET": "", "METRICS_TOKEN": "x",
                                "RTC_TURN_SECRET": "change-me-please", "OTHER": "a" * 40, "DB": insecure},
                               strong=("SECRET_KEY", "JWT_SECRET"), insecure=(insecure,))
    assert problems == ["SECRET_KEY must be set to a strong secret (16+ characters)",
                        "JWT_SECRET must be set to a strong secret (16+ characters)",
                        "RTC_TURN_SECRET is still the CHANGE_ME placeholder"]


# -- microvibe.selfsigned ---------------------------------------------------------------------------


def selfsigned(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "microvibe.selfsigned", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_selfsigned_makes_a_year_long_certificate_once_and_keeps_what_is_there(tmp_path):
    certs = tmp_path / "certs"
    assert selfsigned(str(certs), "--host", "live.example.test").returncode == 0
    key, crt = certs / "tls.key", certs / "tls.crt"
    assert key.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["live.example.test"]
    lifetime = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=364) < lifetime <= timedelta(days=365)
    before = crt.read_bytes(), key.read_bytes()
    again = selfsigned(str(certs), "--host", "other.test")
    assert again.returncode == 0 and "left as they are" in again.stdout
    assert (crt.read_bytes(), key.read_bytes()) == before  # a mounted or earlier certificate is never replaced

    ip = tmp_path / "ip"
    assert selfsigned(str(ip), "--host", "203.0.113.10").returncode == 0
    cert = x509.load_pem_x509_certificate((ip / "tls.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["203.0.113.10"]

    (ip / "tls.key").unlink()  # half a pair: refused, the certificate left alone
    half = selfsigned(str(ip))
    assert half.returncode == 1 and "tls.crt but not the other" in half.stderr and (ip / "tls.crt").exists()
