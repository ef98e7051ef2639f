"""A per-process cap on open event streams and long-polls (``KODO_MAX_STREAMS``).

Each SSE stream (``GET /api/runs/{wid}/events``) and each long-poll (``GET /api/runs/{wid}?until=…``,
``GET /api/runs/{wid}/gates/{key}?timeoutS=…``) holds a slot for as long as its response lasts; past the cap a
new one is answered ``503`` with ``Retry-After`` at once, so slow readers cannot pile up connections, LISTEN
watches and thread-pool reads without bound. The slot is taken and given back around the whole ASGI call, so a
client that disconnects mid-stream frees it too.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

RETRY_AFTER_S = 2
_EVENTS = re.compile(r"^/api/runs/[^/]+/events$")
_RUN = re.compile(r"^/api/runs/[^/]+$")
_GATE = re.compile(r"^/api/runs/[^/]+/gates/[^/]+$")


def is_stream(scope: Scope) -> bool:
    """Whether a request is an event stream or a long-poll (a GET that waits)."""
    if scope.get("method") != "GET":
        return False
    path = str(scope.get("path", ""))
    if _EVENTS.match(path):
        return True
    query = parse_qs(bytes(scope.get("query_string") or b"").decode("latin-1"))
    if _RUN.match(path):
        return "until" in query
    return bool(_GATE.match(path)) and any(value not in {"", "0"} for value in query.get("timeoutS", []))


class StreamLimit:
    """Answers 503 + Retry-After to a stream or long-poll past ``limit`` open ones in this process."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.open = 0  # touched only on the event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_stream(scope):
            await self.app(scope, receive, send)
            return
        if self.open >= self.limit:
            busy = JSONResponse(
                {
                    "error": f"too many open event streams and long-polls in this process ({self.limit}, "
                    "KODO_MAX_STREAMS); retry later"
                },
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )

            async def nothing() -> Message:
                return {"type": "http.disconnect"}

            await busy(scope, nothing, send)
            return
        self.open += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open -= 1


def install(app: FastAPI, limit: int) -> None:
    app.add_middleware(StreamLimit, limit=limit)
