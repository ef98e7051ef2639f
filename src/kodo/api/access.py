"""Access control in one middleware: body size limit, bearer tokens, roles and tenant scoping.

Each route declares what it needs where it is defined (``@requires("approver")`` under its router decorator);
a route that declares nothing needs ``viewer`` for GET/HEAD, ``admin`` otherwise, and — for a tenant-bound
token — a run in its path, or else a token of tenant ``*`` (fail closed). With ``KODO_API_TOKENS`` set:

* no token or an unknown one → 401 (a browser asking for a page is sent to ``/login``);
* a role below the route's → 403;
* a run addressed by the path (``{wid}``, ``{run_key}``, ``{intent_id}``), by ``?wid=``, by an artifact URI
  or by a body field, whose partition is not the token's tenant's → the route's own answer for a run
  that does not exist (404, or ``[]`` where an unknown run has none): existence never leaks;
* a run start naming a partition outside the tenant → 403;
* cluster-wide views (queues, executors, throughput, ``/metrics``, proofs) need a tenant-``*`` token.

Tokens come as ``Authorization: Bearer <token>`` or as the ``kodo_token`` cookie that ``POST /login``
sets (HttpOnly, SameSite=Strict) for the web console. Without tokens nothing is checked but the body size
(kodo then serves loopback only, see ``kodo.main``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, quote

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kodo.access import Principal, Role, TokenTable
from kodo.api.schemas import unstorable_text
from kodo.store import artifacts, dbos_workflows, runs

F = TypeVar("F", bound=Callable[..., Any])
Scoping = Literal["run", "cluster", "shared", "filtered"]
Hidden = Callable[[str, Request], tuple[int, Any] | Response]
COOKIE = "kodo_token"
RUN_PARAMS = ("wid", "run_key", "intent_id")
_ARTIFACT_RUN = re.compile(r"^artifact://run/([^/]+)/")


def not_found(message: str = "run not found") -> Hidden:
    """An invisible run answers like a missing one: 404 with ``message`` (``{key}`` is the id asked for)."""
    return lambda key, _request: (404, {"error": message.replace("{key}", key)})


RUN_NOT_FOUND = not_found()


def empty_list(_key: str, _request: Request) -> tuple[int, Any]:
    return 200, []


@dataclass(frozen=True, slots=True)
class Rule:
    role: Role
    scoping: Scoping = "run"
    hidden: Hidden = RUN_NOT_FOUND
    run_field: str | None = None  # a JSON body field naming a run (or an intent, whose id is its run's)
    run_field_may_be_new: bool = False  # the field may name a run that does not exist yet (a start's intent)
    partition_field: tuple[str, ...] | None = None  # where a start names its queuePartitionKey
    public: bool = False


def requires(
    role: Role,
    *,
    scoping: Scoping = "run",
    hidden: Hidden | None = None,
    run_field: str | None = None,
    partition_field: tuple[str, ...] | None = None,
    run_field_may_be_new: bool = False,
) -> Callable[[F], F]:
    """Declare what a route needs: the role, and how it is scoped to a tenant — ``run`` (the run it
    addresses must be the tenant's), ``cluster`` (tenant ``*`` only), ``shared`` (tenant-independent data:
    recipes, intents) or ``filtered`` (the route filters its list by :func:`partition_patterns` itself)."""
    rule = Rule(role, scoping, hidden or not_found(), run_field, run_field_may_be_new, partition_field)

    def mark(endpoint: F) -> F:
        endpoint.__kodo_access__ = rule  # type: ignore[attr-defined]
        return endpoint

    return mark


def public(endpoint: F) -> F:
    """A route anyone may call, token or not (``/healthz``, the login page)."""
    endpoint.__kodo_access__ = Rule("viewer", "shared", public=True)  # type: ignore[attr-defined]
    return endpoint


# --- what routes ask of the request ----------------------------------------------------------------


def principal(request: Request) -> Principal | None:
    """The token's principal; ``None`` when kodo runs without tokens."""
    found: Principal | None = request.scope.get("kodo.principal")
    return found


def actor(request: Request, claimed: str | None = None) -> str:
    """Who the audit records: the token's subject when there is one (whatever the body claims); without
    tokens ``local`` (a caller on this machine), plus the name the body gives as ``local:<name>``."""
    found = principal(request)
    if found is not None:
        return found.subject
    return f"local:{claimed}" if claimed else "local"


def partition_patterns(request: Request) -> list[str] | None:
    """SQL ``LIKE`` patterns of the partitions the caller may see (``None``: all of them)."""
    found = principal(request)
    return None if found is None else found.like_patterns()


def sees(request: Request, partition: str | None) -> bool:
    found = principal(request)
    return found is None or found.sees(partition)


# --- the middleware ---------------------------------------------------------------------------------


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def _default_rule(method: str, path_params: dict[str, Any]) -> Rule:
    role: Role = "viewer" if method in {"GET", "HEAD"} else "admin"
    return Rule(role, "run" if any(p in path_params for p in RUN_PARAMS) else "cluster")


def _visible(engine: sa.Engine, who: Principal, key: str) -> bool | None:
    """Whether the run (or workflow) ``key`` is the tenant's; ``None`` when no such thing exists."""
    with engine.connect() as conn:
        run = runs.get(conn, key)
        if run is not None:
            return who.sees(run.queue_partition_key)
        row = dbos_workflows.get(conn, key)
    return None if row is None else who.sees(row.partition_key)


def _artifact_run(engine: sa.Engine, uri: str) -> str | None:
    match = _ARTIFACT_RUN.match(uri)
    if match is None:
        with engine.connect() as conn:
            found = artifacts.get_by_uri(conn, uri)
        return None if found is None else found.run_id
    return match.group(1)


def _field(body: bytes, path: tuple[str, ...]) -> Any:
    try:
        value: Any = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError):
        return None
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value


class AccessMiddleware:
    """Body limit first (413), then — with tokens — authentication, role and tenant scope."""

    def __init__(
        self, app: ASGIApp, *, routes_of: FastAPI, engine: sa.Engine, tokens: TokenTable | None, max_body: int
    ) -> None:
        self.app = app
        self.routes_of = routes_of
        self.engine = engine
        self.tokens = tokens
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await self._read_body(scope, receive)
        if body is None:
            too_large = _json(413, {"error": f"request body larger than {self.max_body} bytes"})
            await self._respond(scope, send, too_large)
            return
        problem = _unstorable_request(scope)
        if problem is not None:
            await self._respond(scope, send, _json(400, {"error": f"invalid request: {problem}", "details": []}))
            return
        replay = _replayer(body, receive)
        refusal = await self._check(scope, body) if self.tokens is not None else None
        if refusal is not None:
            await self._respond(scope, send, refusal)
            return
        await self.app(scope, replay, send)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1").strip()
        if declared.isdecimal() and int(declared) > self.max_body:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _respond(self, scope: Scope, send: Send, response: Response) -> None:
        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, nothing, send)

    def _match(self, scope: Scope) -> tuple[Any, dict[str, Any]]:
        partial: tuple[Any, dict[str, Any]] | None = None
        for route in _leaves(self.routes_of.router.routes):
            match, child = route.matches(scope)
            if match == Match.FULL:
                return route, child.get("path_params", {})
            if match == Match.PARTIAL and partial is None:
                partial = (route, child.get("path_params", {}))
        return partial or (None, {})

    async def _check(self, scope: Scope, body: bytes) -> Response | None:
        assert self.tokens is not None
        route, params = self._match(scope)
        method = str(scope.get("method", "GET"))
        if route is not None:
            scope["route"] = route  # so a refusal is still labelled with its route in metrics and traces
        if isinstance(route, Mount):
            return None  # static assets of the console (CSS, the one script)
        rule: Rule = getattr(getattr(route, "endpoint", None), "__kodo_access__", None) or _default_rule(method, params)
        if rule.public:
            return None
        request = Request(scope)
        token = _bearer(request) or request.cookies.get(COOKIE)
        who = self.tokens.lookup(token)
        if who is None:
            if method == "GET" and "text/html" in request.headers.get("accept", ""):
                target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe="")
                return RedirectResponse(f"/login?next={target}", status_code=303)
            unauthorized = {"error": "unauthorized: a valid bearer token is required"}
            return _json(401, unauthorized, {"WWW-Authenticate": "Bearer"})
        scope["kodo.principal"] = who
        if not who.allows(rule.role):
            return _json(403, {"error": f"forbidden: this needs role {rule.role} (token has {who.role})"})
        if who.everywhere:
            return None
        if rule.scoping == "cluster":
            return _json(403, {"error": "forbidden: a cluster-wide view needs a token of tenant *"})
        return await self._scope(request, who, rule, params, body)

    async def _scope(
        self, request: Request, who: Principal, rule: Rule, params: dict[str, Any], body: bytes
    ) -> Response | None:
        if rule.partition_field is not None:
            partition = _field(body, rule.partition_field)
            if not isinstance(partition, str) or not who.owns(partition):
                owned = f"{who.tenant} or {who.tenant}:<suffix>"
                return _json(403, {"error": f"forbidden: name a queuePartitionKey of tenant {who.tenant} ({owned})"})
            tenant = _field(body, (*rule.partition_field[:-1], "tenantId"))
            if tenant is not None and tenant != who.tenant:
                return _json(403, {"error": f"forbidden: tenantId must be your token's tenant {who.tenant}"})
        # A run the path or query names must exist *and* be the tenant's: a missing one gets the same answer as a
        # foreign one here, before the route validates anything else, so no query tells them apart. An intent id
        # (a start's) may name a run that does not exist yet: only a foreign one is refused.
        keys = [(str(params[p]), p != "intent_id") for p in RUN_PARAMS if p in params]
        if "wid" in request.query_params:
            keys.append((request.query_params["wid"], True))
        if rule.run_field is not None and isinstance(_field(body, (rule.run_field,)), str):
            keys.append((_field(body, (rule.run_field,)), not rule.run_field_may_be_new))
        if "uri" in params:
            run_id = await run_in_threadpool(_artifact_run, self.engine, str(params["uri"]))
            if run_id is not None:
                keys.append((run_id, True))
        for key, must_exist in keys:
            visible = await run_in_threadpool(_visible, self.engine, who, key)
            if visible is False or (must_exist and visible is None):
                answer = rule.hidden(key, request)
                return answer if isinstance(answer, Response) else _json(*answer)
        return None


def _unstorable_request(scope: Scope) -> str | None:
    """A path or query Postgres could not hold as text (NUL, lone surrogates) is refused up front."""
    query = parse_qs(bytes(scope.get("query_string") or b"").decode("utf-8", "surrogateescape"))
    texts = [str(scope.get("path", "")), *query, *(value for values in query.values() for value in values)]
    return next((found for text in texts if (found := unstorable_text(text))), None)


def _leaves(routes: list[Any]) -> Iterator[Any]:
    """The app's routes as declared: FastAPI may wrap an included router's routes (``original_router``)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _leaves(inner.routes)
        else:
            yield route


def _bearer(request: Request) -> str | None:
    scheme, _sep, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _replayer(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# --- the console's login --------------------------------------------------------------------------

router = APIRouter(include_in_schema=False)
_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>kodo · sign in</title>
<link rel="stylesheet" href="/static/kodo.css"></head><body><main class="card" style="max-width:28rem;margin:4rem auto">
<h1>Sign in to kodo</h1>{problem}<form method="post" action="/login">
<input type="hidden" name="next" value="{next}"><label>API token <input name="token" type="password"
autocomplete="current-password" required autofocus></label> <button type="submit">Sign in</button></form></main>
</body></html>"""


def _safe_next(raw: str | None) -> str:
    return raw if raw and raw.startswith("/") and not raw.startswith("//") else "/"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


@router.get("/login", response_class=HTMLResponse)
@public
def login_page(request: Request) -> HTMLResponse:
    """The console's sign-in form: paste an API token once; it is kept in an HttpOnly cookie."""
    return HTMLResponse(_PAGE.format(problem="", next=_escape(_safe_next(request.query_params.get("next")))))


@router.post("/login", response_class=HTMLResponse)
@public
async def login(request: Request) -> Response:
    """Check the token and set the ``kodo_token`` cookie (HttpOnly, SameSite=Strict); 401 with the form again."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/"])[0])
    tokens: TokenTable | None = request.app.state.tokens
    if tokens is not None and tokens.lookup(token) is None:
        problem = '<p class="error" role="alert">That token is not valid.</p>'
        return HTMLResponse(_PAGE.format(problem=problem, next=_escape(target)), status_code=401)
    response = RedirectResponse(target, status_code=303)
    if tokens is not None:
        secure = request.url.scheme == "https"
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/")
    return response


@router.get("/logout")
@public
def logout() -> Response:
    """Forget the console's token cookie."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def install(app: FastAPI, *, engine: sa.Engine, tokens: TokenTable | None, max_body: int) -> None:
    """Put the access middleware on ``app`` (call before the observing middleware, which wraps it)."""
    app.state.tokens = tokens
    documents = {app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url} - {None}
    for route in app.router.routes:
        if getattr(route, "path", None) in documents:  # the API's own description: any valid token
            route.endpoint.__kodo_access__ = Rule("viewer", "shared")  # type: ignore[attr-defined]
    app.add_middleware(AccessMiddleware, routes_of=app, engine=engine, tokens=tokens, max_body=max_body)
