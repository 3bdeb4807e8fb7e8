"""A real webhook receiver for tests: an HTTP server on loopback that records every request and
answers what the test tells it (per event: a status, or no answer at all)."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    def signed_with(self, secret: str) -> bool:
        timestamp = self.headers.get("x-microvibe-timestamp", "")
        expected = "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + self.body,
                                        hashlib.sha256).hexdigest()
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300
        return fresh and hmac.compare_digest(expected, self.headers.get("x-microvibe-signature", ""))


@dataclass
class HookReceiver:
    """`answers[event]`: an HTTP status, a list of them (one per request of a room, the last
    repeats), or None to never answer (the request hangs until the server stops)."""

    answers: dict[str, object] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self
        self._stop = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                event = self.headers.get("X-MicroVibe-Event", "")
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.received.append(Received(self.path, headers, body, time.time()))
                answer = receiver._answer(event, receiver.received[-1])
                if answer is None:
                    receiver._stop.wait(30)
                    return
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _answer(self, event: str, request: Received) -> int | None:
        answer = self.answers.get(event, 200)
        if isinstance(answer, list):  # counted per room: another room's request takes none of them
            room = request.json.get("room_id")
            seen = sum(1 for r in self.received if r.headers.get("x-microvibe-event") == event
                       and r.json.get("room_id") == room)
            return answer[min(seen, len(answer)) - 1]
        return answer  # type: ignore[return-value]

    def url(self, event: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{event}"

    def events(self) -> list[str]:
        return [r.json["event"] for r in self.received]

    def of(self, event: str) -> list[Received]:
        return [r for r in self.received if r.json.get("event") == event]

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
