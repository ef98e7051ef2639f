"""Run routes: start, read (header, RunView, steps) and the legacy plan approval. Dual lookup everywhere."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kodo import telemetry
from kodo.api.access import actor, not_found, principal, requires
from kodo.api.answers import ApprovalAnswer, RunHeaderAnswer, answers
from kodo.api.artifacts import ref_media_type
from kodo.api.deps import ApiContext, context
from kodo.api.openapi import body, integer, query
from kodo.api.run_changes import read_until
from kodo.api.schemas import ApiRunBody, PlanApprovalBody, RunRequestBody, parse_body
from kodo.errors import Gone, InvalidInput, NotFound
from kodo.models import RUN_STATUSES, TERMINAL_HEADER_STATUSES, Run, StepRecord, header_status
from kodo.store import artifacts, budgets, durable_status, eval_results, intents, runs, steps
from kodo.store.artifacts import ArtifactRef
from kodo.store.durable_status import RunDurability
from kodo.workflows import gates, spend
from kodo.workflows.queue_policy import admit
from kodo.workflows.runs import WORKFLOW_NAME, start_run

router = APIRouter()
T = TypeVar("T")
DEPRECATION = {"Deprecation": "true", "Sunset": "Wed, 30 Jun 2027 23:59:59 GMT"}


def _ms(value: Any) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def header(ctx: ApiContext, conn: sa.Connection, run: Run, facts: RunDurability | None = None) -> dict[str, Any]:
    """The RunHeader: app status merged (monotonically) with DBOS's, plus posture (``facts``: read here
    unless the caller read them with the run)."""
    # The run's identity is its workflow id; its progress is the phase workflow now responsible for it.
    if facts is None:
        facts = durable_status.for_run(
            conn,
            current_workflow_id=run.current_workflow_id or run.workflow_id,
            workflow_id=run.workflow_id,
            run_id=run.id,
        )
    durable = facts.status
    settings = ctx.settings
    body: dict[str, Any] = {
        "workflowID": run.workflow_id,
        "runId": run.id,
        "intentId": run.intent_id,
        "status": header_status(run.status, durable.status if durable else None),
        "durableStatus": run.status,
        "dbosStatus": durable.status if durable else None,
        "workflowName": WORKFLOW_NAME,
        "currentWorkflowID": run.current_workflow_id or run.workflow_id,
        "recipeRef": {"id": run.recipe_id, "v": run.recipe_v} if run.recipe_id else None,
        "recipeHash": run.recipe_hash,
        "intentHash": run.intent_hash,
        "createdAt": _ms(run.created_at),
        "updatedAt": _ms(run.updated_at),
        "queue": run.options.get("queueName"),
        "priority": run.options.get("priority"),
        "lane": run.options.get("lane"),
        "queuePartitionKey": run.queue_partition_key,
        "tenantId": run.tenant_id,
        "budget": run.budget,
        "budgetViolation": budgets.latest_violation(conn, run.id) if run.budget else None,
        "spend": spend.header(conn, run, datetime.now(UTC)),
        "evalSummary": eval_results.summary(conn, run.id) if run.recipe_id else None,
        "nextAction": run.next_action,
        "lastStep": run.last_step,
        "retryCount": run.retry_count,
        "traceId": run.trace_id,
        "spanId": None,
        "topology": settings.mode_for(ctx.role),
        "runtimeMode": settings.mode_for(ctx.role),
        "ocMode": settings.oc_mode,
        "ocStrictMode": settings.oc_strict_mode,
        "sbxMode": settings.sbx_mode,
        "sbxProvider": settings.sbx_provider,
        "sbxUnisolatedAllowed": settings.unisolated_allowed,
        "appVersion": settings.app_version,
        "workflowVersion": durable.application_version if durable else None,
        "claimScope": settings.claim_scope,
    }
    if run.error is not None:
        body["error"] = run.error
    trace_id = telemetry.trace_id_of(facts.traceparent) or facts.step_trace_id
    body["otelTraceId"] = trace_id
    body["traceUrl"] = telemetry.trace_link(settings.trace_base_url, trace_id)
    if settings.trace_base_url:
        body["traceBaseUrl"] = settings.trace_base_url
    return body


def artifact_ref(run: Run, artifact: ArtifactRef) -> dict[str, Any]:
    return {
        "id": artifact.uri,
        "workflowID": run.workflow_id,
        "stepID": artifact.step_id,
        "taskKey": artifact.task_key,
        "idx": artifact.idx,
        "attempt": artifact.attempt,
        "kind": artifact.kind,
        "mime": ref_media_type(artifact.kind),
        "size": artifact.size,
        "sha256": artifact.sha256,
        "storageKey": artifact.uri,
    }


def step_rows(
    run: Run, records: list[StepRecord], made: list[ArtifactRef], trace_base_url: str | None = None
) -> list[dict[str, Any]]:
    """StepRow[]: every attempt with its artifacts (same step and attempt), by startedAt then stepID, and a
    ``traceUrl`` (``TRACE_BASE_URL`` made concrete) when the attempt was traced."""
    rows = []
    for record in records:
        refs = [artifact_ref(run, a) for a in made if a.step_id == record.step_id and a.attempt == record.attempt]
        row: dict[str, Any] = {
            "stepID": record.step_id,
            "name": record.phase,
            "attempt": record.attempt,
            "startedAt": _ms(record.started_at),
            "endedAt": _ms(record.finished_at),
            "artifactRefs": refs,
            "traceId": record.trace_id,
            "spanId": record.span_id,
            "traceUrl": telemetry.trace_link(trace_base_url, record.trace_id, record.span_id),
        }
        if isinstance(record.output, dict) and record.output.get("error"):
            row["error"] = record.output["error"]
        rows.append(row)
    rows.sort(key=lambda r: (r["startedAt"] or 0, r["stepID"], r["attempt"]))
    return rows


def run_view(run: Run, latest: list[StepRecord], made: list[ArtifactRef]) -> dict[str, Any]:
    """The legacy RunView of ``GET /runs/{id}``."""
    view: dict[str, Any] = {
        "runId": run.id,
        "workflowId": run.workflow_id,
        "intentId": run.intent_id,
        "recipeRef": {"id": run.recipe_id, "v": run.recipe_v} if run.recipe_id else None,
        "recipeHash": run.recipe_hash,
        "intentHash": run.intent_hash,
        "status": run.status,
        "steps": [
            {
                "stepId": s.step_id,
                "phase": s.phase,
                "attempt": s.attempt,
                "output": s.output,
                "startedAt": s.started_at.isoformat(),
                "finishedAt": s.finished_at.isoformat() if s.finished_at else None,
                "traceId": s.trace_id,
                "spanId": s.span_id,
            }
            for s in latest
        ],
        # No content: an artifact is fetched by its URI (GET /api/artifacts/{uri}).
        "artifacts": [{"kind": a.kind, "uri": a.uri, "sha256": a.sha256, "size": a.size} for a in made],
        "traceId": run.trace_id,
        "lastStep": run.last_step,
        "retryCount": run.retry_count,
    }
    if run.error is not None:
        view["error"] = run.error
    if run.next_action is not None:
        view["nextAction"] = run.next_action
    return view


def read_by_key(ctx: ApiContext, read: Callable[[sa.Connection, str], T], key: str) -> T:
    """One read by key on a read connection (for async routes: call it through ``run_in_threadpool``)."""
    with ctx.read() as conn:
        return read(conn, key)


def require_run(conn: sa.Connection, key: str) -> Run:
    run = runs.get(conn, key)
    if run is None:
        raise NotFound("run not found")
    return run


async def _start(request: Request, intent_id: str, body: RunRequestBody) -> tuple[dict[str, Any], bool]:
    ctx = context(request)
    fields = body.model_dump(exclude_none=True, exclude={"intentId"})
    who = principal(request)
    if who is not None and not who.everywhere:  # with tokens, a run's tenant is its token's
        fields["tenantId"] = who.tenant

    def _transaction() -> tuple[dict[str, Any], bool]:
        with ctx.transaction() as conn:
            if intents.get(conn, intent_id) is None:
                raise NotFound(f"Intent not found: {intent_id}")
            start = admit(conn, ctx.settings, intent_id, fields)
            run, replay = start_run(conn, ctx.client, ctx.settings, start)
            return header(ctx, conn, run), replay

    # Off the event loop: a route's database work (a commit waits for the disk) never stalls other requests.
    return await run_in_threadpool(_transaction)


@router.post(
    "/api/runs",
    openapi_extra=body(ApiRunBody),
    status_code=201,
    responses={**answers(201, RunHeaderAnswer, 400, 404, 409, 413), 200: {"model": RunHeaderAnswer}},
)
@requires(
    "approver",
    run_field="intentId",
    run_field_may_be_new=True,
    partition_field=("queuePartitionKey",),
    hidden=not_found("Intent not found: {key}"),
)
async def start_api_run(request: Request) -> JSONResponse:
    """Start (or replay) the run of an intent: 201 new, 200 replay; RunHeader + ``isReplay``."""
    body = await parse_body(request, ApiRunBody)
    view, replay = await _start(request, body.intentId, body)
    return JSONResponse({**view, "isReplay": replay}, status_code=200 if replay else 201)


@router.post("/intents/{intent_id}/run", openapi_extra=body(RunRequestBody, required=False))
@requires("approver", partition_field=("queuePartitionKey",), hidden=not_found("intent not found"))
async def start_legacy_run(intent_id: str, request: Request) -> JSONResponse:
    """Legacy start: 202 ``{runId, workflowId}`` for new and replayed starts alike."""
    ctx = context(request)
    if not ctx.settings.enable_legacy_run_routes:
        raise Gone("legacy route disabled; use POST /api/runs")
    if await run_in_threadpool(read_by_key, ctx, intents.get, intent_id) is None:
        raise NotFound("intent not found")
    body = await parse_body(request, RunRequestBody)
    if body.queuePartitionKey is None and ctx.settings.intent_queue_partition:
        # The legacy route predates the partition law: it starts in the intent's own partition.
        body = body.model_copy(update={"queuePartitionKey": f"legacy-{intent_id}"})
    view, _replay = await _start(request, intent_id, body)
    return JSONResponse(
        {"runId": view["runId"], "workflowId": view["workflowID"]}, status_code=202, headers=DEPRECATION
    )


def read_header(ctx: ApiContext, wid: str) -> dict[str, Any]:
    """The RunHeader, by run id or workflow id (one statement)."""
    with ctx.read() as conn:
        found = durable_status.run_with_durability(conn, wid)
        if found is None:
            raise NotFound("run not found")
        return header(ctx, conn, *found)


# ``?until=``: the header statuses that end a long-poll (a run that needs a human, or one that has ended).
UNTIL: dict[str, frozenset[str]] = {
    "input": TERMINAL_HEADER_STATUSES | {"WAITING_INPUT"},
    "end": TERMINAL_HEADER_STATUSES,
}
DEFAULT_WAIT_S = 20


def _long_poll(request: Request) -> tuple[frozenset[str], int] | None:
    """``(statuses, timeoutS)`` of a long-poll request, or None for a plain read; anything else is a 400."""
    query_params = request.query_params
    unknown = set(query_params) - {"until", "timeoutS"}
    if unknown:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    repeated = sorted(name for name in set(query_params) if len(query_params.getlist(name)) > 1)
    if repeated:
        raise InvalidInput(f"repeated query parameter(s): {', '.join(repeated)}")
    until, raw = query_params.get("until"), query_params.get("timeoutS")
    if until is None:
        if raw is not None:
            raise InvalidInput("timeoutS needs until=input or until=end")
        return None
    if until not in UNTIL:
        raise InvalidInput(f"until must be one of: {', '.join(UNTIL)}")
    if raw is not None and not (re.fullmatch("[0-9]{1,2}", raw) and int(raw) <= 30):
        raise InvalidInput("timeoutS must be an integer from 0 to 30")
    return UNTIL[until], DEFAULT_WAIT_S if raw is None else int(raw)


def _wakes(statuses: frozenset[str]) -> Callable[[str], bool]:
    """Whether a run row's new status (from its change notification) can satisfy ``statuses``."""
    return lambda status: status not in RUN_STATUSES or header_status(status) in statuses


@router.get(
    "/api/runs/{wid}",
    openapi_extra=query(("until", {"type": "string", "enum": list(UNTIL)}), ("timeoutS", integer(0, 30))),
    response_model=RunHeaderAnswer,
    responses=answers(200, None, 400, 404),
)
@requires("viewer")
async def get_run_header(wid: str, request: Request) -> JSONResponse:
    """The RunHeader of a run, by run id or workflow id. ``?until=input`` (the run waits for a human, or has
    ended) or ``?until=end`` long-polls up to ``timeoutS`` (0..30, default 20) seconds; either way the answer
    is the header as it is then (the caller checks its status)."""
    ctx = context(request)
    long_poll = _long_poll(request)
    if long_poll is None:
        return JSONResponse(await run_in_threadpool(read_header, ctx, wid))
    statuses, timeout_s = long_poll
    view = await read_until(
        ctx.changes,
        wid,
        partial(read_header, ctx, wid),
        lambda view: view["status"] in statuses,
        timeout_s,
        wants=_wakes(statuses),
    )
    return JSONResponse(view)


STEP_PAGE = 200


def _page(request: Request) -> tuple[int, int]:
    """``?limit=`` (1..500, default 200) and ``?offset=`` (0.., default 0) of a paginated list."""
    values = []
    for name, default, high in (("limit", STEP_PAGE, 500), ("offset", 0, 10**9)):
        raw = request.query_params.getlist(name)
        if len(raw) > 1 or (raw and not raw[0].isdecimal()) or not 0 <= int(raw[0] if raw else default) <= high:
            raise InvalidInput(f"{name} must be one integer from {0 if name == 'offset' else 1} to {high}")
        values.append(int(raw[0]) if raw else default)
    if values[0] < 1:
        raise InvalidInput("limit must be one integer from 1 to 500")
    return values[0], values[1]


@router.get("/api/runs/{wid}/steps", openapi_extra=query(("limit", integer(1, 500)), ("offset", integer(0, 10**9))))
@requires("viewer")
def get_run_steps(wid: str, request: Request) -> JSONResponse:
    """Step attempts with their artifact refs (never content), in a stable order, ``?limit=`` (default 200) at a
    time from ``?offset=``; a ``Link: <…>; rel="next"`` header names the next page. 404 for an unknown run."""
    ctx = context(request)
    unknown = set(request.query_params) - {"limit", "offset"}
    if unknown:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    limit, offset = _page(request)
    with ctx.read() as conn:
        run = require_run(conn, wid)
        records = steps.list_for_run(conn, run.id, limit=limit + 1, offset=offset)
        made = artifacts.refs_for_run(conn, run.id)
    rows = step_rows(run, records[:limit], made, ctx.settings.trace_base_url)
    more = {"Link": f'</api/runs/{quote(wid, safe="")}/steps?limit={limit}&offset={offset + limit}>; rel="next"'}
    return JSONResponse(rows, headers=more if len(records) > limit else None)


@router.get("/runs/{run_key}")
@requires("viewer")
def get_run_view(run_key: str, request: Request) -> JSONResponse:
    """The legacy RunView: status, latest step attempts, all artifacts."""
    ctx = context(request)
    with ctx.read() as conn:
        run = require_run(conn, run_key)
        return JSONResponse(run_view(run, steps.latest_for_run(conn, run.id), artifacts.refs_for_run(conn, run.id)))


async def _approve(request: Request, key: str, headers: dict[str, str] | None) -> JSONResponse:
    ctx = context(request)
    await run_in_threadpool(read_by_key, ctx, require_run, key)  # 404 before the body is parsed
    body = await parse_body(request, PlanApprovalBody)
    approved_by = actor(request, body.approvedBy)

    def _transaction() -> tuple[Run, datetime]:
        with ctx.transaction() as conn:
            run = require_run(conn, key)
            approved_at, _woken = gates.approve_plan_legacy(
                conn, run, approved_by=approved_by, claimed_by=body.approvedBy, notes=body.notes
            )
            return run, approved_at

    run, approved_at = await run_in_threadpool(_transaction)
    return JSONResponse(
        {"accepted": True, "runId": run.id, "approvedAt": approved_at.isoformat()},
        status_code=202,
        headers=headers,
    )


@router.post(
    "/api/runs/{wid}/approve-plan",
    openapi_extra=body(PlanApprovalBody),
    status_code=202,
    responses=answers(202, ApprovalAnswer, 400, 404, 409),
)
@requires("approver")
async def approve_plan(wid: str, request: Request) -> JSONResponse:
    """Approve the plan of a run (the plan gate's "yes"): 202 ``{accepted, runId, approvedAt}``."""
    return await _approve(request, wid, None)


@router.post("/runs/{run_key}/approve-plan", openapi_extra=body(PlanApprovalBody))
@requires("approver")
async def approve_plan_legacy(run_key: str, request: Request) -> JSONResponse:
    """The legacy alias of approve-plan, with deprecation headers."""
    if not context(request).settings.enable_legacy_run_routes:
        raise Gone("legacy route disabled; use POST /api/runs/{wid}/approve-plan")
    return await _approve(request, run_key, DEPRECATION)
