"""nginx + nginx-rtmp as the reference server: our own config in a temp dir, loopback, free ports.

One worker process: MicroVibe's media plane is one asyncio process, and nginx-rtmp needs
rtmp_auto_push to share a live stream between workers, so one worker is the like-for-like setup.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.procs import free_port, wait_for_port

from .tools import RTMP_MODULE_PACKAGE, apt_install, require

MODULE_GLOBS = ("/usr/lib/nginx/modules/ngx_rtmp_module.so", "/usr/share/nginx/modules/ngx_rtmp_module.so")

CONF = """\
load_module {module};
worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
{record}{hls}        }}
    }}
}}
{http}"""
# Same settings as MicroVibe's defaults (HLS_FRAGMENT=2, HLS_PLAYLIST_LENGTH=60).
HLS = """\
            hls on;
            hls_path {prefix}/hls;
            hls_fragment 2s;
            hls_playlist_length 60s;
"""
# nginx-rtmp's recorder: every stream to an FLV file, as its docs' `record all`.
RECORD = """\
            record all;
            record_path {prefix}/record;
            record_unique on;
"""
# The playlists and segments, served by nginx itself as the nginx-rtmp docs show (no cache on the
# playlist); temp paths inside the prefix so nothing outside it is touched.
HTTP = """\
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /hls {{
            types {{
                application/vnd.apple.mpegurl m3u8;
                video/mp2t ts;
            }}
            root {prefix};
            add_header Cache-Control no-cache;
            add_header Access-Control-Allow-Origin "*";  # hls.js on another origin (bench/latency.py)
        }}
    }}
}}
"""


def rtmp_module() -> str:
    for pattern in MODULE_GLOBS:
        if found := glob.glob(pattern):
            return found[0]
    apt_install("nginx", RTMP_MODULE_PACKAGE)
    for pattern in MODULE_GLOBS:
        if found := glob.glob(pattern):
            return found[0]
    raise RuntimeError(f"{RTMP_MODULE_PACKAGE} installed but ngx_rtmp_module.so not found")


def nginx_version(binary: str) -> str:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
    return out.removeprefix("nginx version: ")


class NginxRtmp:
    """Context manager; `root_pid` is the master (the meter adds its worker)."""

    name = "nginx-rtmp"
    stream = "bench"
    unsupported = {"flv": "n/a: stock nginx-rtmp has no HTTP-FLV"}

    def __init__(self, hls: bool = False, record: bool = False) -> None:
        self.hls = hls
        self.record = record
        self.binary = require("nginx")
        self.module = rtmp_module()
        self.version = nginx_version(self.binary)
        self.rtmp_port = free_port()
        self.http_port = free_port() if hls else 0
        self.prefix = Path(tempfile.mkdtemp(prefix="mv-bench-nginx-"))
        self.proc: subprocess.Popen | None = None
        self._streams = 0

    @property
    def publish_url(self) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{self.stream}"

    def new_stream(self) -> tuple[str, str]:
        """(publish URL, HLS playlist URL) of a stream name not used before on this server."""
        self._streams += 1
        name = f"hls{self._streams}"
        return (f"rtmp://127.0.0.1:{self.rtmp_port}/live/{name}",
                f"http://127.0.0.1:{self.http_port}/hls/{name}.m3u8")

    def play_url(self, kind: str) -> str | None:
        # Stock nginx-rtmp has no HTTP-FLV (that is the nginx-http-flv fork's flv_live).
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{self.stream}" if kind == "rtmp" else None

    @property
    def root_pid(self) -> int:
        assert self.proc
        return self.proc.pid

    def __enter__(self) -> NginxRtmp:
        conf = self.prefix / "nginx.conf"
        hls = HLS.format(prefix=self.prefix) if self.hls else ""
        http = HTTP.format(prefix=self.prefix, port=self.http_port) if self.hls else ""
        record = RECORD.format(prefix=self.prefix) if self.record else "            record off;\n"
        # The worker drops root (to nobody): it must reach the prefix and write the HLS/recorded files.
        self.prefix.chmod(0o755)
        for wanted, folder in ((self.hls, "hls"), (self.record, "record")):
            if wanted:
                (self.prefix / folder).mkdir(mode=0o777)
                (self.prefix / folder).chmod(0o777)
        conf.write_text(CONF.format(module=self.module, prefix=self.prefix, port=self.rtmp_port, hls=hls,
                                    record=record, http=http))
        # -e: the early error log too, so nothing touches /var/log/nginx.
        cmd = [self.binary, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "error.log")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.rtmp_port, 10)
            if self.http_port:
                wait_for_port(self.http_port, 10)
        except TimeoutError:
            self.__exit__()
            raise RuntimeError("nginx did not start: " + self.log()) from None
        return self

    def log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: fast shutdown of master and worker
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.prefix, ignore_errors=True)

    def recorded_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.prefix / "record").glob("*")) if self.record else 0
