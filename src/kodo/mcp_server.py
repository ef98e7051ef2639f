"""``kodo mcp``: an MCP server (official MCP Python SDK) so a coding assistant can start and follow runs.

It speaks to kodo only through :mod:`kodo.client` over HTTP, so kodo's own access rules apply to every
call. On stdio it uses the one token it is given, and the tools it offers follow that token's role
(``GET /api/whoami``): a ``viewer`` gets the read-only tools; ``approver`` and above also get
``start_recipe_run`` and ``answer_gate``. Over streamable HTTP (:func:`http_app`) every request must
carry a bearer token kodo accepts (else 401); the tools offered follow that token's role in the same way,
and each tool call is made with the caller's own token.
A kodo error becomes a tool error whose text is kodo's message (an assistant can read and correct it),
never a crash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from typing_extensions import TypedDict  # pydantic needs this one on Python 3.11

from kodo.client import AsyncKodoClient, RunHeader
from kodo.errors import AccessDenied, KodoError

T = TypeVar("T")
ClientSource = Callable[[Context[Any, Any] | None], AbstractAsyncContextManager[AsyncKodoClient]]
WRITE_ROLES = frozenset({"approver", "operator", "admin"})
INSTRUCTIONS = (
    "kodo runs coding intents durably. Start a run from a recipe (list_recipes, start_recipe_run), follow it "
    "with wait_for_run (until='input' stops when a human must answer, until='end' when it is over), read why "
    "it is stuck with run_diagnosis, review its change with run_diff, find open gates with list_inbox, and "
    "answer a gate with answer_gate "
    '(a plan gate takes {"choice": "yes"} or {"choice": "no"}).'
)

ANSWER_HELP = 'Plan gate: {"choice": "yes"|"no", "rationale": "..."}; question: {"answer": "..."}'
WorkflowId = Annotated[str, Field(min_length=1, max_length=200, description="The run's workflow id (or run id).")]


class RunView(TypedDict):
    workflowId: str
    runId: str
    status: str
    nextAction: str | None
    lastStep: str | None
    queuePartitionKey: str | None
    errorCode: str | None
    errorMessage: str | None


class InboxEntry(TypedDict):
    workflowId: str
    gateKey: str
    purpose: str
    nextAction: str | None
    slaStatus: str


class DiffView(TypedDict):
    diff: str
    truncated: bool  # the diff was cut at max_chars (the whole one: GET /api/runs/{wid}/diff)


class DiagnosisView(TypedDict):
    code: str
    reason: str
    details: Any


class RecipeView(TypedDict):
    recipeId: str
    latestVersion: str
    status: str
    stableRef: str | None


class GateAnswer(TypedDict):
    workflowId: str
    gateKey: str
    accepted: bool
    isReplay: bool


def run_view(header: RunHeader) -> RunView:
    return {
        "workflowId": header.workflow_id,
        "runId": header.run_id,
        "status": header.status,
        "nextAction": header.next_action,
        "lastStep": header.last_step,
        "queuePartitionKey": header.queue_partition_key,
        "errorCode": header.error.code if header.error else None,
        "errorMessage": header.error.message if header.error else None,
    }


async def _kodo(call: Awaitable[T]) -> T:
    """Await a client call; a kodo error becomes a tool error carrying kodo's own message."""
    try:
        return await call
    except KodoError as error:
        raise ToolError(f"{type(error).__name__}: {error.message}") from error


def dedupe_key_for(workflow_id: str, gate_key: str, answer: Mapping[str, Any]) -> str:
    """The same answer to the same gate is the same reply (a retried tool call is a replay, not a conflict)."""
    canonical = json.dumps([workflow_id, gate_key, answer], sort_keys=True, separators=(",", ":"))
    return "mcp:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def shared(kodo: AsyncKodoClient) -> ClientSource:
    """Every call through the one client (stdio: one assistant, one token)."""

    @asynccontextmanager
    async def source(_context: Context[Any, Any] | None) -> AsyncIterator[AsyncKodoClient]:
        yield kodo

    return source


def bearer(headers: Mapping[str, str] | None) -> str | None:
    scheme, _sep, value = (headers or {}).get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def per_caller(base_url: str) -> ClientSource:
    """Each call with the bearer token of the HTTP request that made it."""

    @asynccontextmanager
    async def source(context: Context[Any, Any] | None) -> AsyncIterator[AsyncKodoClient]:
        token = bearer(context.headers if context is not None else None)
        async with AsyncKodoClient(base_url, token=token, timeout_s=60.0) as kodo:
            yield kodo

    return source


def build_server(kodo: AsyncKodoClient | ClientSource, role: str) -> MCPServer:
    """The MCP server over ``kodo`` (a client, or where each call gets one); write tools only when ``role``
    may write."""
    source = shared(kodo) if isinstance(kodo, AsyncKodoClient) else kodo
    server: MCPServer = MCPServer(name="kodo", instructions=INSTRUCTIONS)
    tool: Callable[..., Callable[[Callable[..., Any]], Callable[..., Any]]] = server.tool

    @tool()
    async def get_run(workflow_id: WorkflowId, ctx: Context[Any, Any]) -> RunView:
        """Read a run's header: status (ENQUEUED, PENDING, WAITING_INPUT, SUCCESS, ERROR, CANCELLED), next action."""
        async with source(ctx) as kodo:
            return run_view(await _kodo(kodo.get_run(workflow_id)))

    @tool()
    async def wait_for_run(
        workflow_id: WorkflowId,
        until: Annotated[Literal["input", "end"], Field(description="input: a human must answer, or it ended")],
        ctx: Context[Any, Any],
        timeout_s: Annotated[int, Field(ge=0, le=600, description="Give up after this many seconds.")] = 60,
    ) -> RunView:
        """Follow a run until it waits for a human (until='input') or has ended (until='end'), or the timeout."""
        async with source(ctx) as kodo:
            if until == "input":
                return run_view(await _kodo(kodo.wait_for_input(workflow_id, timeout_s=timeout_s)))
            return run_view(await _kodo(kodo.wait_for_end(workflow_id, timeout_s=timeout_s)))

    @tool()
    async def run_diagnosis(workflow_id: WorkflowId, ctx: Context[Any, Any]) -> DiagnosisView:
        """Why a run is not progressing (or how it ended), in plain language with a code."""
        async with source(ctx) as kodo:
            found = await _kodo(kodo.diagnosis(workflow_id))
        return {"code": found.code, "reason": found.reason, "details": found.raw.get("details")}

    @tool()
    async def run_diff(
        workflow_id: WorkflowId,
        ctx: Context[Any, Any],
        max_chars: Annotated[
            int, Field(ge=1, le=200_000, description="Cut the diff at this many characters.")
        ] = 50_000,
    ) -> DiffView:
        """The change a run makes to its workspace, as a unified diff against its base commit (what the plan
        gate's reviewer sees); empty when it changes nothing."""
        async with source(ctx) as kodo:
            text = await _kodo(kodo.diff(workflow_id))
        return {"diff": text[:max_chars], "truncated": len(text) > max_chars}

    @tool()
    async def list_inbox(
        ctx: Context[Any, Any],
        limit: Annotated[int, Field(ge=1, le=200, description="At most this many gates.")] = 50,
    ) -> list[InboxEntry]:
        """Open human gates of waiting runs, soonest deadline first, with their SLA state."""
        async with source(ctx) as kodo:
            items = await _kodo(kodo.inbox(limit=limit))
        return [
            {
                "workflowId": item.workflow_id,
                "gateKey": item.gate_key,
                "purpose": item.purpose,
                "nextAction": item.next_action,
                "slaStatus": item.sla_status,
            }
            for item in items
        ]

    @tool()
    async def list_recipes(ctx: Context[Any, Any]) -> list[RecipeView]:
        """The recipes a run can start from, with their latest and stable versions."""
        async with source(ctx) as kodo:
            found = await _kodo(kodo.list_recipes())
        return [
            {
                "recipeId": recipe.recipe_id,
                "latestVersion": recipe.latest_version,
                "status": recipe.status,
                "stableRef": recipe.stable_ref,
            }
            for recipe in found
        ]

    if role in WRITE_ROLES:
        _write_tools(server, source)
    return server


def _write_tools(server: MCPServer, source: ClientSource) -> None:
    tool: Callable[..., Callable[[Callable[..., Any]], Callable[..., Any]]] = server.tool

    @tool()
    async def start_recipe_run(
        recipe_id: Annotated[str, Field(min_length=1, description="e.g. compile-default")],
        version: Annotated[str, Field(min_length=1, description="e.g. v1")],
        form_data: Annotated[dict[str, Any], Field(description="The recipe's form, e.g. {'goal': '...'}")],
        queue_partition_key: Annotated[str, Field(min_length=1, description="Your tenant's partition.")],
        ctx: Context[Any, Any],
        auto_approve: Annotated[bool, Field(description="Skip the human plan gate.")] = False,
    ) -> RunView:
        """Start a run from a pinned recipe version and its form data (the same start again is the same run)."""
        async with source(ctx) as kodo:
            header = await _kodo(
                kodo.start_recipe_run(
                    recipe_id, version, form_data, queue_partition_key=queue_partition_key, auto_approve=auto_approve
                )
            )
        return run_view(header)

    @tool()
    async def answer_gate(
        workflow_id: WorkflowId,
        answer: Annotated[dict[str, Any], Field(description=ANSWER_HELP)],
        ctx: Context[Any, Any],
        gate_key: Annotated[str | None, Field(description="The gate; default: the run's open gate.")] = None,
    ) -> GateAnswer:
        """Answer a run's open human gate (approve or reject its plan, or answer its question)."""
        async with source(ctx) as kodo:
            key = gate_key
            if key is None:
                open_gates = [gate for gate in await _kodo(kodo.list_gates(workflow_id)) if gate.open]
                if not open_gates:
                    raise ToolError(f"run {workflow_id} has no open gate")
                key = open_gates[0].gate_key
            dedupe_key = dedupe_key_for(workflow_id, key, answer)
            reply = await _kodo(kodo.reply_to_gate(workflow_id, key, answer, dedupe_key=dedupe_key, origin="external"))
        return {"workflowId": workflow_id, "gateKey": key, "accepted": reply.accepted, "isReplay": reply.is_replay}


async def role_of(kodo: AsyncKodoClient) -> str:
    """The token's role as kodo sees it (``admin`` when kodo runs without tokens)."""
    return (await kodo.whoami()).role


# --- streamable HTTP, behind kodo's own tokens -----------------------------------------------------------


class TokenGate:
    """ASGI: an HTTP request whose bearer token kodo refuses is a 401 before any MCP message is read; an
    accepted one goes to the server of its role (``writer`` for approver and above, else ``reader``), so a
    caller is offered only the tools its token may use. Lifespan events go to ``lifespan``, which runs both
    servers' session managers."""

    def __init__(self, reader: ASGIApp, writer: ASGIApp, lifespan: ASGIApp, base_url: str) -> None:
        self.reader = reader
        self.writer = writer
        self.lifespan = lifespan
        self.base_url = base_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.lifespan(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        async with AsyncKodoClient(self.base_url, token=bearer(headers), timeout_s=10.0) as kodo:
            try:
                role = await role_of(kodo)
            except AccessDenied as error:
                refusal = JSONResponse(
                    {"error": error.message}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await refusal(scope, receive, send)
                return
            except KodoError as error:
                await JSONResponse({"error": error.message}, status_code=502)(scope, receive, send)
                return
        await (self.writer if role in WRITE_ROLES else self.reader)(scope, receive, send)


def http_app(base_url: str, *, host: str = "127.0.0.1") -> ASGIApp:
    """The MCP tools over streamable HTTP at ``/mcp`` (stateless, JSON answers), each call made with the
    caller's own token: a ``viewer`` is offered the read-only tools, ``approver`` and above every tool (kodo
    still decides each call: tenants, partitions)."""
    reader = build_server(per_caller(base_url), "viewer")
    writer = build_server(per_caller(base_url), "admin")
    apps = [
        server.streamable_http_app(stateless_http=True, json_response=True, host=host) for server in (reader, writer)
    ]

    @asynccontextmanager
    async def both(_app: Starlette) -> AsyncIterator[None]:
        async with reader.session_manager.run(), writer.session_manager.run():
            yield

    return TokenGate(apps[0], apps[1], Starlette(lifespan=both), base_url)
