"""Backups: `make backup` / `make restore FILE=...` (`python -m microvibe.backup backup [--dir DIR]`,
`python -m microvibe.backup restore FILE`).

One archive per backup, `BACKUP_DIR/microvibe-backup-YYYYmmddTHHMMSSZ.tar` (BACKUP_DIR defaults to
var/backups), holding:
- `manifest.json`: when, which database, what the recordings part holds;
- `database.dump`: `pg_dump -Fc` of the database the settings use (DATABASE_URL or DATABASE_HOST/...);
- `recordings/...`: the files under RECORDINGS_PATH. With S3 storage (RECORDINGS_S3_ENDPOINT_URL and
  RECORDINGS_S3_BUCKET) the bucket's objects are not in the archive (back the bucket up with the object
  store's tools); local files still there (recordings being written, ones from before S3) are.
Redis is not backed up: it holds only live state (heartbeats, claims, queues) rebuilt at start.

Restore runs `pg_restore --clean --if-exists --no-owner --single-transaction` into the configured
database (all or nothing: a failed restore leaves the database as it was) and extracts the
recordings into RECORDINGS_PATH (files of the same name are replaced, others are left).
Stop the services that write (web, media nodes, worker, beat) before restoring.

PostgreSQL only: on the embedded SQLite default this refuses and says to stop the service and copy
var/db.sqlite3 instead (a live SQLite file copied mid-write is not a backup).
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

FORMAT = 1
ARCHIVE_PREFIX = "microvibe-backup-"
MANIFEST, DUMP, RECORDINGS = "manifest.json", "database.dump", "recordings"
DEBIAN_PG_ROOT = "/usr/lib/postgresql"  # Debian installs each major's client under N/bin
_LIBPQ_ENV = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",
              "dbname": "PGDATABASE", "sslmode": "PGSSLMODE"}


class BackupError(RuntimeError):
    """A backup or restore that cannot be done, said in a sentence for the operator."""


@dataclass(frozen=True)
class Storage:
    """What the settings say is where: the database's libpq parameters and the recordings."""

    database: dict[str, str]
    recordings: Path
    s3_note: str  # empty unless finished recordings go to S3


# -- where things are (the settings' own reading of the environment) -----------------------------


def database_params(db: Mapping) -> dict[str, str]:
    """libpq parameters of a Django DATABASES entry; BackupError unless it is PostgreSQL."""
    if "postgresql" not in db.get("ENGINE", ""):
        raise BackupError(
            f"backups need PostgreSQL (set DATABASE_URL or DATABASE_HOST); this is {db.get('ENGINE')} at "
            f"{db.get('NAME')}: for the embedded SQLite default, stop the service and copy that file")
    params = {"host": db.get("HOST") or "", "port": str(db.get("PORT") or ""), "user": db.get("USER") or "",
              "password": db.get("PASSWORD") or "", "dbname": db.get("NAME") or "",
              "sslmode": (db.get("OPTIONS") or {}).get("sslmode", "")}
    return {key: value for key, value in params.items() if value}


def libpq_env(params: Mapping[str, str]) -> dict[str, str]:
    """The environment for pg_dump/pg_restore: PG* variables, so the password is never in argv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({_LIBPQ_ENV[key]: value for key, value in params.items()})
    return env


def storage_from_settings() -> Storage:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "microvibe.settings")
    import django

    django.setup()
    from django.conf import settings

    from live.recordings import recordings_s3_enabled

    note = ""
    if recordings_s3_enabled():
        note = (f"finished recordings are in the S3 bucket {settings.RECORDINGS_S3_BUCKET} at "
                f"{settings.RECORDINGS_S3_ENDPOINT_URL}: not in this archive, back the bucket up with its own tools")
    return Storage(database_params(settings.DATABASES["default"]), Path(settings.RECORDINGS_PATH), note)


# -- PostgreSQL client tools ------------------------------------------------------------------------


def server_major(params: Mapping[str, str]) -> int:
    import psycopg

    try:
        with psycopg.connect(**params, connect_timeout=10) as conn:
            return conn.info.server_version // 10000
    except psycopg.Error as error:
        where = f"{params.get('host', 'localhost')}:{params.get('port', '5432')}/{params.get('dbname', '')}"
        raise BackupError(f"cannot reach PostgreSQL at {where}: {str(error).strip()}") from error


def _tool_major(path: str) -> int:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    found = re.search(r"\)\s*(\d+)", out)  # "pg_dump (PostgreSQL) 16.4 (Debian ...)"
    return int(found[1]) if found else 0


def pg_tool(name: str, major: int, root: str = DEBIAN_PG_ROOT) -> str:
    """pg_dump refuses a server newer than itself: the tool of the server's major version, else the
    oldest newer one (Debian's per-version directories), else the one on PATH when new enough."""
    by_major = {}
    for path in glob.glob(os.path.join(root, "*", "bin", name)):
        version = Path(path).parts[-3]
        if version.isdigit() and os.access(path, os.X_OK):
            by_major[int(version)] = path
    fitting = sorted(m for m in by_major if m >= major)
    if fitting:
        return by_major[fitting[0]]
    on_path = shutil.which(name)
    if on_path and _tool_major(on_path) >= major:
        return on_path
    raise BackupError(f"no {name} for PostgreSQL {major} or newer: install postgresql-client-{major}")


def _run(args: list[str], params: Mapping[str, str]) -> None:
    done = subprocess.run(args, env=libpq_env(params), capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


# -- backup -----------------------------------------------------------------------------------------


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(datetime.now(UTC).timestamp()), 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_recordings(tar: tarfile.TarFile, root: Path) -> tuple[int, int]:
    """Every regular file under root, as `recordings/<relative path>`; (files, bytes)."""
    files = size = 0
    for path in sorted(root.rglob("*")) if root.is_dir() else []:
        if path.is_symlink() or not path.is_file():
            continue
        try:
            info = tar.gettarinfo(path, arcname=f"{RECORDINGS}/{path.relative_to(root).as_posix()}")
            with path.open("rb") as file:  # a file still growing is copied up to the size just read
                tar.addfile(info, file)
        except FileNotFoundError:
            continue  # finalized meanwhile (a `.part.mp4` replaced by its MP4): nothing half-written is added
        files, size = files + 1, size + info.size
    return files, size


def backup(directory: Path, storage: Storage, now: datetime | None = None) -> Path:
    """Write one archive into directory and return its path (see the module's docstring)."""
    major = server_major(storage.database)
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / f"{ARCHIVE_PREFIX}{(now or datetime.now(UTC)).strftime('%Y%m%dT%H%M%SZ')}.tar"
    if archive.exists():
        raise BackupError(f"{archive} exists already")
    partial = archive.with_name(archive.name + ".partial")  # renamed when complete: no half archive is listed
    try:
        with tempfile.TemporaryDirectory(dir=directory, prefix=".dump-") as work:  # the dump beside the archive
            dump = Path(work) / DUMP
            _run([pg_tool("pg_dump", major), "-Fc", "-f", str(dump)], storage.database)
            with tarfile.open(partial, "w") as tar:
                tar.add(dump, arcname=DUMP)
                files, size = _add_recordings(tar, storage.recordings)
                _add_bytes(tar, MANIFEST, _manifest_bytes(storage, major, files, size))
        os.replace(partial, archive)
    finally:
        partial.unlink(missing_ok=True)
    return archive


def _manifest_bytes(storage: Storage, major: int, files: int, size: int) -> bytes:
    return json.dumps({"format": FORMAT, "created": datetime.now(UTC).isoformat(),
                       "database": {"name": storage.database.get("dbname", ""), "server_major": major},
                       "recordings": {"path": str(storage.recordings), "files": files, "bytes": size,
                                      "s3_note": storage.s3_note}}, indent=2).encode()


# -- restore ----------------------------------------------------------------------------------------


def _manifest(tar: tarfile.TarFile, archive: Path) -> dict:
    names = set(tar.getnames())
    if MANIFEST not in names or DUMP not in names:
        raise BackupError(f"{archive} is not a MicroVibe backup (no {MANIFEST} and {DUMP} in it)")
    try:
        manifest = json.load(tar.extractfile(MANIFEST))
    except (AttributeError, ValueError) as error:  # not a regular file, not JSON
        raise BackupError(f"{archive} has an unreadable {MANIFEST}") from error
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{archive} is a backup of format {manifest.get('format')}; this restores {FORMAT}")
    return manifest


def _recording_members(tar: tarfile.TarFile, root: Path) -> list[tarfile.TarInfo]:
    """The archive's recordings as members relative to root, each checked by tarfile's "data" filter (no
    absolute names, no "..", no links out of root, no device files) before anything is restored."""
    prefix = f"{RECORDINGS}/"
    members = []
    for member in tar.getmembers():
        if member.name.startswith(prefix) and member.isfile():
            try:
                members.append(tarfile.data_filter(member.replace(name=member.name[len(prefix):], deep=False),
                                                   str(root)))
            except tarfile.FilterError as error:
                raise BackupError(f"refused: the archive's {member.name!r} would be written outside "
                                  f"{root} or is not a plain file ({error})") from error
    return members


def _extract_recordings(tar: tarfile.TarFile, members: list[tarfile.TarInfo], root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    tar.extractall(root, members=members, filter="data")
    if os.geteuid() == 0:  # root (the compose `backup` service): files take the recordings directory's owner
        owner = root.stat()
        for member in members:
            path = root / member.name
            while path != root:
                os.chown(path, owner.st_uid, owner.st_gid)
                path = path.parent


def _restore_database(tar: tarfile.TarFile, params: Mapping[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="mv-restore-") as work:
        tar.extract(DUMP, work, filter="data")
        tool = pg_tool("pg_restore", server_major(params))
        _run([tool, "--clean", "--if-exists", "--no-owner", "--single-transaction",
              "--dbname", params.get("dbname", ""), str(Path(work) / DUMP)], params)


def restore(archive: Path, storage: Storage) -> dict:
    """Restore the database and the recordings from archive; returns its manifest."""
    try:
        tar = tarfile.open(archive, "r")
    except (OSError, tarfile.TarError) as error:
        raise BackupError(f"cannot read {archive}: {error}") from error
    with tar:
        manifest = _manifest(tar, archive)
        members = _recording_members(tar, storage.recordings)  # all checked before the database is touched
        _restore_database(tar, storage.database)
        _extract_recordings(tar, members, storage.recordings)
    manifest["restored_files"] = len(members)
    return manifest


# -- command line -----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m microvibe.backup", description="MicroVibe backup and restore")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("backup", help="write one archive into --dir")
    make.add_argument("--dir", type=Path, default=Path(os.environ.get("BACKUP_DIR") or "var/backups"))
    back = commands.add_parser("restore", help="restore the database and recordings from an archive")
    back.add_argument("file", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        storage = storage_from_settings()
        if args.command == "backup":
            archive = backup(args.dir, storage)
            print(f"backup: wrote {archive}")
        else:
            manifest = restore(args.file, storage)
            print(f"restore: database {storage.database.get('dbname')} and {manifest['restored_files']} "
                  f"recording file(s) into {storage.recordings} from {args.file} (made {manifest['created']})")
        if storage.s3_note:
            print(f"note: {storage.s3_note}")
    except BackupError as error:
        print(f"{args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
