"""MicroVibe (`manage.py serve`, media plane on) on free ports, with one room to publish to."""

from __future__ import annotations

import json
import secrets
import sys
import urllib.request

from tests.support.procs import Service


def _post(url: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


class MicroVibe:
    """Context manager; `root_pid` is the serve process (its whole tree is metered)."""

    name = "MicroVibe"

    def __init__(self, hls: bool = False, record: bool = False) -> None:
        # The HLS muxer is per-stream work nginx does only with hls on; same fragment and playlist as its config.
        # With `record`, every room records (RECORDING_DEFAULT), as nginx-rtmp's `record all`.
        env = {"HLS_ENABLED": "1" if hls else "0", "HLS_FRAGMENT": "2", "HLS_PLAYLIST_LENGTH": "60",
               "RECORDING_DEFAULT": "1" if record else "0"}
        self.record = record
        self.service = Service(env, media=True)
        self.version = "python " + sys.version.split()[0]
        self.stream_key = ""
        self.room_id = ""
        self._access = ""

    @property
    def publish_url(self) -> str:
        return f"rtmp://127.0.0.1:{self.service.rtmp_port}/live/{self.stream_key}"

    def play_url(self, kind: str) -> str | None:
        if kind == "rtmp":
            return f"rtmp://127.0.0.1:{self.service.rtmp_port}/live/{self.room_id}"
        if kind == "flv":
            return f"http://127.0.0.1:{self.service.media_http_port}/flv/{self.room_id}.flv"
        return None

    def new_stream(self) -> tuple[str, str]:
        """(publish URL, HLS playlist URL) of a new room, so nothing of an earlier stream is reused."""
        stream_key, room_id = self._create_room()
        return (f"rtmp://127.0.0.1:{self.service.rtmp_port}/live/{stream_key}",
                f"http://127.0.0.1:{self.service.media_http_port}/hls/{room_id}.m3u8")

    def new_whip_stream(self) -> tuple[str, str, str]:
        """(room id, stream key, HLS playlist URL) of a new room to publish to over WHIP."""
        stream_key, room_id = self._create_room("webrtc")
        return room_id, stream_key, f"http://127.0.0.1:{self.service.media_http_port}/hls/{room_id}.m3u8"

    def _create_room(self, push_protocol: str = "rtmp") -> tuple[str, str]:
        room = _post(self.service.url("/api/v1/live/create"), {"title": "bench", "push_protocol": push_protocol},
                     self._access)
        return room["stream_key"], room["room"]["room_id"]

    @property
    def root_pid(self) -> int:
        assert self.service.proc
        return self.service.proc.pid

    def __enter__(self) -> MicroVibe:
        self.service.__enter__()
        try:
            user = {"username": "bench" + secrets.token_hex(4), "password": secrets.token_urlsafe(16)}
            self._access = _post(self.service.url("/api/v1/auth/register"), user)["access"]
            self.stream_key, self.room_id = self._create_room()
        except BaseException:
            self.__exit__()
            raise
        return self

    def log(self) -> str:
        return self.service.log()[-4000:]

    def __exit__(self, *exc: object) -> None:
        self.service.__exit__(None, None, None)

    def recorded_bytes(self) -> int:
        root = self.service.dir / "recordings"
        return sum(p.stat().st_size for p in root.glob("*.mp4")) if self.record and root.exists() else 0
