"""External tools the harness drives: installed on demand (Debian packages, run as root)."""

from __future__ import annotations

import os
import shutil
import subprocess

# binary -> Debian package that provides it
_PACKAGES = {"nginx": "nginx", "ffmpeg": "ffmpeg", "ffprobe": "ffmpeg"}
RTMP_MODULE_PACKAGE = "libnginx-mod-rtmp"
_updated = False


def apt_install(*packages: str) -> None:
    global _updated
    if os.geteuid() != 0:
        raise RuntimeError(f"missing {' '.join(packages)}: run as root or `apt-get install -y {' '.join(packages)}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _updated:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        _updated = True
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env, stdout=subprocess.DEVNULL)


def require(binary: str) -> str:
    """Path of `binary`, installing its package first when it is missing."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if not found:
        apt_install(_PACKAGES[binary])
        found = shutil.which(binary, path="/usr/sbin:/usr/bin")
    if not found:
        raise RuntimeError(f"{binary} still missing after installing {_PACKAGES[binary]}")
    return found
