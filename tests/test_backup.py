"""`make backup` / `make restore` (microvibe/backup.py) against a real PostgreSQL (tests.support.procs.postgres):
a migrated database with a user, a room and a recording whose file is on disk is backed up; the rows and the
file are deleted (and a user added); the restore brings back exactly the backed-up state. Also: the SQLite
default and a damaged or hostile archive are refused with a sentence, S3 storage is noted, and the
pg_dump/pg_restore of the server's major version is the one chosen."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import psycopg
import pytest

from microvibe import backup
from tests.support.procs import ROOT, postgres

pytestmark = pytest.mark.timeout(300)

SETUP = """
from django.contrib.auth import get_user_model
from live.models import Recording
from live.services import room_create
owner = get_user_model().objects.create_user("alice", password="a-long-password")
room, _key = room_create(owner=owner, title="Backed up show")
recording = Recording.objects.create(room=room, status="ready", file="rec-one.mp4", size=4096)
print(room.public_id, recording.public_id)
"""


@pytest.fixture(scope="module")
def pg():
    with postgres() as server:
        yield server


@pytest.fixture
def site(pg, tmp_path: Path) -> dict[str, str]:
    """The service's environment: a fresh, migrated database of its own and a recordings directory."""
    name = f"b_{tmp_path.name.lower().replace('-', '_')}"[:60]
    with psycopg.connect(pg.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "RECORDINGS_", "REDIS_"))}
    env.update(DATABASE_URL=pg.url.rsplit("/", 1)[0] + f"/{name}", RECORDINGS_PATH=str(tmp_path / "recordings"),
               VAR_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="microvibe.settings")
    manage(env, "migrate", "--noinput")
    return env


def manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True, timeout=120).stdout


def make(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The Makefile's own targets; -o: the virtualenv is taken as set up (no pip run from a test)."""
    return subprocess.run(["make", "-s", "-o", ".venv/.installed", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def module(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "microvibe.backup", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def rows(env: dict[str, str], sql: str) -> list[tuple]:
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        return [tuple(row) for row in conn.execute(sql).fetchall()]


def test_make_backup_then_restore_brings_back_rows_and_recordings(site, tmp_path):
    room_id, recording_id = manage(site, "shell", "-c", SETUP).splitlines()[-1].split()
    recordings = Path(site["RECORDINGS_PATH"])
    recordings.mkdir(parents=True, exist_ok=True)
    content = os.urandom(4096)
    (recordings / "rec-one.mp4").write_bytes(content)
    (recordings / "nested").mkdir()
    (recordings / "nested" / "thumb.jpg").write_bytes(b"jpeg")

    backups = tmp_path / "backups"
    done = make(site, "backup", f"BACKUP_DIR={backups}")
    assert done.returncode == 0, done.stderr
    [archive] = list(backups.iterdir())  # one archive and nothing left over (no .partial, no dump dir)
    assert archive.name.startswith("microvibe-backup-") and archive.suffix == ".tar"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))
    assert {"manifest.json", "database.dump", "recordings/rec-one.mp4", "recordings/nested/thumb.jpg"} <= names
    server_major = rows(site, "SHOW server_version_num")[0][0]
    assert manifest["database"]["server_major"] == int(server_major) // 10000
    assert manifest["recordings"]["files"] == 2 and not manifest["recordings"]["s3_note"]

    # Everything goes, and something new arrives: the restore must bring back the backed-up state only.
    manage(site, "shell", "-c", "from django.contrib.auth import get_user_model; "
                                "get_user_model().objects.all().delete(); "
                                "get_user_model().objects.create_user('mallory', password='another-password')")
    (recordings / "rec-one.mp4").unlink()
    (recordings / "nested" / "thumb.jpg").unlink()
    assert rows(site, "SELECT count(*) FROM live_room") == [(0,)]

    done = make(site, "restore", f"FILE={archive}")
    assert done.returncode == 0, done.stderr
    assert rows(site, "SELECT username FROM auth_user") == [("alice",)]
    assert rows(site, "SELECT public_id, title FROM live_room") == [(room_id, "Backed up show")]
    assert rows(site, "SELECT public_id, file FROM live_recording") == [(recording_id, "rec-one.mp4")]
    assert (recordings / "rec-one.mp4").read_bytes() == content
    assert (recordings / "nested" / "thumb.jpg").read_bytes() == b"jpeg"
    manage(site, "migrate", "--check")  # the restored schema is the code's: nothing left to apply


def test_s3_recordings_are_noted_and_local_files_still_kept(site, tmp_path):
    env = {**site, "RECORDINGS_S3_ENDPOINT_URL": "https://s3.example.invalid", "RECORDINGS_S3_BUCKET": "shows"}
    Path(env["RECORDINGS_PATH"]).mkdir(parents=True, exist_ok=True)
    (Path(env["RECORDINGS_PATH"]) / "live.part.mp4").write_bytes(b"still being written")
    done = module(env, "backup", "--dir", str(tmp_path / "backups"))
    assert done.returncode == 0, done.stderr
    assert "note: finished recordings are in the S3 bucket shows" in done.stdout
    [archive] = list((tmp_path / "backups").iterdir())
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        assert "recordings/live.part.mp4" in tar.getnames()
    assert "S3 bucket shows" in manifest["recordings"]["s3_note"]


def test_the_sqlite_default_is_refused_with_what_to_do(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
    env.update(VAR_DIR=str(tmp_path / "var"))
    done = make(env, "backup", f"BACKUP_DIR={tmp_path / 'backups'}")
    assert done.returncode != 0
    assert "backups need PostgreSQL" in done.stderr and "copy that file" in done.stderr, done.stderr
    assert not (tmp_path / "backups").exists()


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_restore_refuses_an_archive_that_is_not_a_backup_or_escapes(site, tmp_path):
    manifest = json.dumps({"format": 1, "created": "x"}).encode()
    stranger = _archive(tmp_path / "other.tar", {"hello.txt": b"hi"})
    hostile = _archive(tmp_path / "hostile.tar", {"manifest.json": manifest, "database.dump": b"not a dump",
                                                  "recordings/../../escaped.txt": b"out"})
    done = module(site, "restore", str(stranger))
    assert done.returncode == 1 and "not a MicroVibe backup" in done.stderr, done.stderr
    done = module(site, "restore", str(hostile))
    assert done.returncode == 1 and "refused" in done.stderr, done.stderr  # before pg_restore ever runs
    assert not (tmp_path / "escaped.txt").exists()
    done = module(site, "restore", str(tmp_path / "missing.tar"))
    assert done.returncode == 1 and "cannot read" in done.stderr, done.stderr
    done = make(site, "restore")
    assert done.returncode == 2 and "usage: make restore FILE=" in done.stdout


def _fake_tool(root: Path, major: int, name: str) -> str:
    path = root / str(major) / "bin" / name
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def test_the_client_tool_of_the_servers_major_version_is_chosen(tmp_path, monkeypatch):
    tools = {major: _fake_tool(tmp_path, major, "pg_dump") for major in (14, 15, 17)}
    assert backup.pg_tool("pg_dump", 15, root=str(tmp_path)) == tools[15]
    assert backup.pg_tool("pg_dump", 16, root=str(tmp_path)) == tools[17]  # older refuses, newer dumps
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(backup.BackupError, match="install postgresql-client-18"):
        backup.pg_tool("pg_dump", 18, root=str(tmp_path))


def test_database_params_come_from_the_settings_entry_and_the_password_stays_out_of_argv():
    params = backup.database_params({"ENGINE": "django.db.backends.postgresql", "HOST": "postgres", "PORT": 5432,
                                     "USER": "microvibe", "PASSWORD": "pw", "NAME": "microvibe",
                                     "OPTIONS": {"sslmode": "disable"}})
    assert params == {"host": "postgres", "port": "5432", "user": "microvibe", "password": "pw",
                      "dbname": "microvibe", "sslmode": "disable"}
    env = backup.libpq_env(params)
    assert env["PGPASSWORD"] == "pw" and env["PGHOST"] == "postgres" and env["PGDATABASE"] == "microvibe"
