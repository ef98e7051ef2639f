"""Request hygiene in one middleware, before anything else reads the request: Host, Origin, Content-Type.

A web page the operator happens to visit can send requests to ``http://127.0.0.1:3001`` (cross-site request
forgery) or, after pointing its own name at 127.0.0.1, read the answers too (DNS rebinding). Browsers send a
"simple" cross-site POST without asking first only with a form-like content type, always with an ``Origin``
and always with the ``Host`` of the name the page used. So:

* a ``Host`` outside ``KODO_ALLOWED_HOSTS`` (default: the loopback names and ``KODO_HOST``) → 400, on every
  route (reads, event streams and long-polls included) but ``GET /healthz``;
* a write (any method but GET/HEAD/OPTIONS) whose ``Origin`` is not the server's own origin (or one of
  ``KODO_ALLOWED_ORIGINS``) → 403 (a request without ``Origin`` is not
  a browser's cross-site write);
* a write whose body is not ``application/json`` (a body without a content type, ``text/plain``, a form)
  → 415; an empty body without a content type is allowed (``{}``). The console's sign-in form is the one
  form-encoded route.

Every refusal happens before a route runs, so nothing is written.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kodo.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_ROUTES = frozenset({"/login"})  # the console's sign-in form posts a token, form-encoded
JSON_TYPES = frozenset({"application/json"})


def host_name(host: str) -> str:
    """``Host`` header → the name alone: lower case, without port or IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


class RequestHygiene:
    """Refuses a foreign Host (400), a foreign Origin on a write (403) and a non-JSON write body (415)."""

    def __init__(self, app: ASGIApp, *, hosts: frozenset[str], origins: frozenset[str] | None) -> None:
        self.app = app
        self.hosts = hosts
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, message = refusal

        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        await JSONResponse({"error": message}, status_code=status)(scope, nothing, send)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        method = str(scope.get("method", "GET")).upper()
        path = str(scope.get("path", ""))
        host = headers.get("host", "")
        if not (method == "GET" and path == "/healthz") and not self.host_allowed(host):
            return 400, f"Host {host_name(host) or '(none)'!s} is not allowed: add it to KODO_ALLOWED_HOSTS"
        if method in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and not self.origin_allowed(origin, host):
            return 403, f"forbidden: Origin {origin} may not send writes here (KODO_ALLOWED_ORIGINS)"
        if path in FORM_ROUTES:
            return None
        content_type = headers.get("content-type")
        has_body = headers.get("content-length", "0").strip() not in {"", "0"} or "transfer-encoding" in headers
        if content_type is None and not has_body:
            return None
        if content_type is None or media_type(content_type) not in JSON_TYPES:
            return 415, f"unsupported media type {media_type(content_type or '') or '(none)'}: send application/json"
        return None

    def host_allowed(self, host: str) -> bool:
        return "*" in self.hosts or host_name(host) in self.hosts

    def origin_allowed(self, origin: str, host: str) -> bool:
        normalized = origin.strip().rstrip("/").lower()
        if self.origins is not None and ("*" in self.origins or normalized in self.origins):
            return True
        parts = urlsplit(normalized)
        return parts.scheme in {"http", "https"} and parts.netloc == host.strip().lower()


def install(app: FastAPI, settings: Settings) -> None:
    """Put the hygiene middleware outside the access middleware (call after ``access.install``)."""
    app.add_middleware(RequestHygiene, hosts=settings.host_names, origins=settings.origins)
