"""The outermost HTTP middleware: a server span per request (when tracing is on; a run started by the
request joins its trace) and the request's latency in ``kodo_http_request_duration_seconds``, labelled by
the matched route template (``unmatched`` for a 404 outside every route)."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kodo import telemetry
from kodo.api.metrics import Metrics


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


class Observe:
    def __init__(self, app: ASGIApp, *, metrics: Metrics | None, tracing: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        method = str(scope.get("method", "GET"))
        try:
            if self.tracing:
                await self._traced(scope, receive, sending, method, status)
            else:
                await self.app(scope, receive, sending)
        finally:
            if self.metrics is not None:
                elapsed = time.perf_counter() - started
                self.metrics.http.labels(method, route_template(scope), str(status[0])).observe(elapsed)

    async def _traced(self, scope: Scope, receive: Receive, send: Send, method: str, status: list[int]) -> None:
        attributes: dict[str, Any] = {"http.request.method": method, "url.path": scope.get("path")}
        with telemetry.span(f"{method} {scope.get('path')}", kind=SpanKind.SERVER, **attributes) as span:
            try:
                await self.app(scope, receive, send)
            finally:
                template = route_template(scope)
                span.update_name(f"{method} {template}")
                span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status[0])
