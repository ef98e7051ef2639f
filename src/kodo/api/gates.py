"""Human-in-the-loop routes: gates (list, long-poll get, reply), external events, interactions, the inbox,
and the legacy ``/runs/{id}/events`` and ``/runs/{id}/retry``."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kodo.api.access import actor, empty_list, partition_patterns, requires
from kodo.api.answers import GateAnswer, InboxAnswer, LegacyEventAnswer, OkAnswer, ReplyAnswer, RetryAnswer, answers
from kodo.api.deps import DEPRECATION, ApiContext, context
from kodo.api.openapi import body, integer, query
from kodo.api.run_changes import read_until
from kodo.api.schemas import ExternalEventBody, GateReplyBody, RunEventBody, parse_body
from kodo.errors import Conflict, Gone, InvalidInput, NotFound
from kodo.store import gates as gate_store
from kodo.store import runs
from kodo.views import read_by_key
from kodo.views.gates import GateView, InteractionRow, gate_view, gate_views, inbox_row, interaction_row, origins
from kodo.views.reviews import gate_review
from kodo.views.runs import require_run
from kodo.workflows import gates
from kodo.workflows.runs import retry_run

router = APIRouter()
GATE_SLICE_SEC = 1.0
_GATE_KEY = re.compile(r"^[a-z0-9][a-z0-9:_-]{0,127}$")


def _gate_key(raw: str) -> str:
    if not _GATE_KEY.match(raw):
        raise InvalidInput(f"invalid gateKey: {raw!r} (lowercase a-z0-9:_- , 1..128 chars)")
    return raw


def _int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    unknown = set(request.query_params) - {name}
    if unknown:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"\d+", raw) or not low <= int(raw) <= high:
        raise InvalidInput(f"{name} must be an integer from {low} to {high}")
    return int(raw)


@router.get("/api/runs/{wid}/gates", response_model=list[GateAnswer])
@requires("viewer", hidden=empty_list)
def list_gates(wid: str, request: Request) -> JSONResponse:
    """The run's gates, newest first (an unknown run has none)."""
    ctx = context(request)
    with ctx.read() as conn:
        run = runs.get(conn, wid)
        return JSONResponse([] if run is None else gate_views(conn, run))


def _read_gate(ctx: ApiContext, wid: str, key: str) -> GateView:
    with ctx.read() as conn:
        run = require_run(conn, wid)
        gate = gate_store.get(conn, run.id, key)
        if gate is None:
            raise NotFound("gate not found")
        view = gate_view(run.workflow_id, gate, origins(conn, run.id).get(key))
        review = gate_review(conn, run, gate, ctx.settings.review_diff_max_lines)
        if review is not None:  # the plan gate's card: the plan and the diff it approves
            view["review"] = review
        return view


@router.get(
    "/api/runs/{wid}/gates/{gate_key}", openapi_extra=query(("timeoutS", integer(0, 30))), response_model=GateAnswer
)
@requires("viewer")
async def get_gate(wid: str, gate_key: str, request: Request) -> JSONResponse:
    """One gate; ``?timeoutS=`` (0..30) long-polls until it is resolved or the time is up."""
    ctx = context(request)
    key = _gate_key(gate_key)
    timeout_s = _int_query(request, "timeoutS", 0, 0, 30)
    # A gate is resolved in the same transaction that moves its run on, so the run row's change wakes the
    # poll; the re-read every GATE_SLICE_SEC covers the rest.
    view = await read_until(
        ctx.changes,
        wid,
        partial(_read_gate, ctx, wid, key),
        lambda view: view["state"] != "PENDING",
        timeout_s,
        live_slice_sec=GATE_SLICE_SEC,
    )
    return JSONResponse(view)


def _reply(
    ctx: ApiContext, wid: str, key: str, body: GateReplyBody | ExternalEventBody, topic: str | None, who: str
) -> bool:
    with ctx.transaction() as conn:
        run = require_run(conn, wid)
        return gates.reply(
            conn, run, key, payload=body.payload, dedupe_key=body.dedupeKey, origin=body.origin, topic=topic, actor=who
        )


@router.post(
    "/api/runs/{wid}/gates/{gate_key}/reply",
    openapi_extra=body(GateReplyBody),
    response_model=ReplyAnswer,
    responses=answers(200, None, 409),
)
@requires("approver")
async def reply_to_gate(wid: str, gate_key: str, request: Request) -> JSONResponse:
    """Answer a gate: 200 ``{ok, isReplay}``; the same dedupeKey with another payload is 409."""
    key = _gate_key(gate_key)
    body = await parse_body(request, GateReplyBody)
    replay = await run_in_threadpool(_reply, context(request), wid, key, body, None, actor(request))
    return JSONResponse({"ok": True, "isReplay": replay})


@router.post(
    "/api/events/hitl",
    openapi_extra=body(ExternalEventBody),
    response_model=OkAnswer,
    responses=answers(200, None, 404, 409),
)
@requires("approver", run_field="workflowId")
async def external_event(request: Request) -> JSONResponse:
    """A machine sender's reply; topic ``human:<gateKey>`` must match the gate (``sys:*`` is ledgered only)."""
    body = await parse_body(request, ExternalEventBody)
    if body.topic.startswith("human:") and body.topic != f"human:{body.gateKey}":
        raise Conflict(f"topic {body.topic} does not match gate {body.gateKey}")
    ctx = context(request)
    if body.topic.startswith("sys:"):
        await run_in_threadpool(_ledger_only, ctx, body, actor(request))
        return JSONResponse({"ok": True})
    await run_in_threadpool(_reply, ctx, body.workflowId, body.gateKey, body, body.topic, actor(request))
    return JSONResponse({"ok": True})


def _ledger_only(ctx: ApiContext, body: ExternalEventBody, who: str) -> None:
    """A ``sys:*`` event: ledgered against its gate, never sent to the run."""
    with ctx.transaction() as conn:
        run = require_run(conn, body.workflowId)
        if gate_store.get(conn, run.id, body.gateKey) is None:
            raise NotFound("gate not found")
        gate_store.record_interaction(
            conn,
            workflow_id=run.workflow_id,
            run_id=run.id,
            gate_key=body.gateKey,
            topic=body.topic,
            dedupe_key=body.dedupeKey,
            payload=body.payload,
            origin=body.origin,
            actor=who,
        )


@router.get(
    "/api/runs/{wid}/interactions", openapi_extra=query(("limit", integer(1, 500))), response_model=list[InteractionRow]
)
@requires("viewer", hidden=empty_list)
def list_interactions(wid: str, request: Request) -> JSONResponse:
    """The reply ledger of a run, oldest first (``?limit=`` 1..500)."""
    ctx = context(request)
    limit = _int_query(request, "limit", 200, 1, 500)
    with ctx.read() as conn:
        run = runs.get(conn, wid)
        rows = [] if run is None else gate_store.interactions(conn, run.id, limit)
    return JSONResponse([interaction_row(i) for i in rows])


@router.get(
    "/api/hitl/inbox",
    openapi_extra=query(("limit", integer(1, 200))),
    response_model=list[InboxAnswer],
    responses=answers(200, None),
)
@requires("viewer", scoping="filtered")
def inbox(request: Request) -> JSONResponse:
    """Open gates of waiting runs, soonest deadline first, with an SLA state."""
    ctx = context(request)
    limit = _int_query(request, "limit", 100, 1, 200)
    now = datetime.now(UTC)
    rows = []
    with ctx.read() as conn:
        gates = gate_store.open_gates(conn, limit, partition_patterns(request))
        owners = runs.workflow_ids(conn, [gate.run_id for gate in gates])  # one read, not one per gate
        for gate in gates:
            rows.append(inbox_row(owners[gate.run_id], gate, now))
    return JSONResponse(rows)


@router.post(
    "/runs/{run_key}/events",
    openapi_extra=body(RunEventBody),
    status_code=202,
    responses=answers(202, LegacyEventAnswer, 409, 410),
)
@requires("approver")
async def legacy_event(run_key: str, request: Request) -> JSONResponse:
    """Legacy: an event answers the gate it names (``gateKey``) or the run's newest open gate; 202
    ``{accepted, isReplay, gateKey}``. The identical event again is a replay bound to its first gate;
    otherwise 409 unless the run is waiting_input, 400 for a non-decision to the plan gate."""
    ctx = context(request)
    if not ctx.settings.enable_legacy_run_routes:
        raise Gone("legacy route disabled; use POST /api/runs/{wid}/gates/{gateKey}/reply")
    run = await run_in_threadpool(read_by_key, ctx, require_run, run_key)
    body = await parse_body(request, RunEventBody)
    who = actor(request)

    def _send() -> tuple[str, bool]:
        with ctx.transaction() as conn:
            event = {"type": body.type, "payload": body.payload}
            return gates.legacy_event(conn, run, event, body.gateKey, who)

    key, replay = await run_in_threadpool(_send)
    return JSONResponse({"accepted": True, "isReplay": replay, "gateKey": key}, status_code=202, headers=DEPRECATION)


@router.post("/runs/{run_key}/retry", status_code=202, responses=answers(202, RetryAnswer, 409, 410))
@requires("operator")
def legacy_retry(run_key: str, request: Request) -> JSONResponse:
    """Retry a failed run from its first incomplete step: 202 ``{accepted, newRunId, fromStep}``; else 409."""
    ctx = context(request)
    if not ctx.settings.enable_legacy_run_routes:
        raise Gone("legacy route disabled")
    if request.query_params:
        raise InvalidInput("retry takes no query parameters")
    with ctx.transaction() as conn:
        run = require_run(conn, run_key)
        answer = retry_run(conn, ctx.client, ctx.settings, run, requested_by=actor(request))
    return JSONResponse(answer, status_code=202, headers=DEPRECATION)
