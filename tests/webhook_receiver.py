"""A real HTTP webhook receiver on loopback (a thread), recording every request it gets.

``failures`` makes the first N requests of each ``webhook-id`` answer 500; ``hang`` makes every request
wait that many seconds before answering (longer than kodo's timeout: a receiver that never answers).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    at: float


@dataclass
class Receiver:
    url: str
    failures: int = 0
    hang: float = 0.0
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of_type(self, event_type: str, secret: str) -> list[tuple[Received, dict[str, Any]]]:
        """Requests whose verified body has ``type`` = ``event_type`` (verification raises on a bad signature)."""
        found = []
        with self.lock:
            requests = list(self.requests)
        for request in requests:
            payload = Webhook(secret).verify(request.body, request.headers)
            if payload["type"] == event_type:
                found.append((request, payload))
        return found

    def successes(self) -> dict[str, int]:
        """2xx answers per webhook-id."""
        counts: dict[str, int] = {}
        with self.lock:
            for request in self.requests:
                if 200 <= request.status < 300:
                    counts[request.headers["webhook-id"]] = counts.get(request.headers["webhook-id"], 0) + 1
        return counts


@contextmanager
def receiver(*, failures: int = 0, hang: float = 0.0) -> Iterator[Receiver]:
    state = Receiver(url="", failures=failures, hang=hang)
    seen: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            if state.hang:
                time.sleep(state.hang)
            with state.lock:
                message = headers.get("webhook-id", "")
                seen[message] = seen.get(message, 0) + 1
                status = 500 if seen[message] <= state.failures else 204
                state.requests.append(Received(headers=headers, body=body, status=status, at=time.monotonic()))
            try:
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:
                pass  # the client gave up (timeout) already

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
