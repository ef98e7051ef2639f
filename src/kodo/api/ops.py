"""The ops plane over HTTP: exactly six ``/api/ops/wf*`` routes, plus queue views, durable sleep and executors.

Queries are strict (an unknown key is a 400), GETs never write, and every mutation needs a non-blank
``actor`` and ``reason`` (400 and zero writes otherwise), answers 202 and writes one OPS audit row.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from kodo.api.access import actor, not_found, partition_patterns, requires
from kodo.api.answers import OpsAnswer, answers
from kodo.api.deps import context
from kodo.api.openapi import BOOLEAN, TEXT, body, integer, query
from kodo.api.queries import query_bool, query_int, query_text, strict_query
from kodo.api.schemas import Strict, parse_body
from kodo.errors import Conflict, InvalidInput
from kodo.ops import executors, queues, workflows
from kodo.store import dbos_workflows, runs
from kodo.store.dbos_workflows import STATUSES, Filter
from kodo.workflows.timers import MAX_SLEEP_MS, SLEEP_WORKFLOW, start_sleep

router = APIRouter()
NonBlank = Annotated[str, StringConstraints(min_length=1, pattern=r"\S")]


class OpsActionBody(Strict):
    actor: NonBlank
    reason: NonBlank


class ForkBody(OpsActionBody):
    stepN: Annotated[int, Field(ge=1, le=2_147_483_647)]
    appVersion: NonBlank | None = None


# --- the six workflow routes ---------------------------------------------------------------------


@router.get(
    "/api/ops/wf",
    openapi_extra=query(
        ("status", TEXT),
        ("name", TEXT),
        ("limit", integer(1, 200)),
        ("queue", TEXT),
        ("partition", TEXT),
        ("hideInternal", BOOLEAN),
    ),
    response_model=list[OpsAnswer],
)
@requires("viewer", scoping="filtered")
def list_workflows(request: Request) -> JSONResponse:
    """OpsWorkflowSummary[], newest first: ``status`` (comma list), ``name``, ``queue``, ``partition``,
    ``hideInternal`` and ``limit`` (1..200, default 20)."""
    query = strict_query(request, {"status", "name", "limit", "queue", "partition", "hideInternal"})
    statuses = [s.strip() for s in (query_text(query, "status") or "").split(",") if s.strip()]
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", [{"loc": ["query", "status"]}])
    name, queue, partition = query_text(query, "name"), query_text(query, "queue"), query_text(query, "partition")
    where = Filter(
        statuses=statuses,
        names=[name] if name else [],
        queues=[queue] if queue else [],
        partitions=[partition] if partition else [],
        hide_internal=query_bool(query, "hideInternal"),
        limit=query_int(query, "limit", 20, 1, 200),
        partition_like=partition_patterns(request),
    )
    return JSONResponse(workflows.list_workflows(context(request).ops(), where))


@router.get("/api/ops/wf/{wid}", response_model=OpsAnswer)
@requires("viewer", hidden=not_found("workflow not found: {key}"))
def get_workflow(wid: str, request: Request) -> JSONResponse:
    """Summary + run + children + audit (newest first); 404 ``workflow not found: <id>``."""
    strict_query(request, set())
    return JSONResponse(workflows.get_workflow(context(request).ops(), wid))


@router.get("/api/ops/wf/{wid}/steps", response_model=list[OpsAnswer])
@requires("viewer", hidden=not_found("workflow not found: {key}"))
def get_workflow_steps(wid: str, request: Request) -> JSONResponse:
    """WorkflowStepSummary[] in function-id order."""
    strict_query(request, set())
    return JSONResponse(workflows.steps(context(request).ops(), wid))


@router.post(
    "/api/ops/wf/{wid}/cancel",
    openapi_extra=body(OpsActionBody),
    status_code=202,
    responses=answers(202, OpsAnswer, 409),
)
@requires("operator", hidden=not_found("workflow not found: {key}"))
async def cancel_workflow(wid: str, request: Request) -> JSONResponse:
    """Cancel (a run: its phase, children and sandboxes): 202; 409 unless PENDING/ENQUEUED/DELAYED (live run)."""
    strict_query(request, set())
    body = await parse_body(request, OpsActionBody)
    result = await run_in_threadpool(
        partial(workflows.cancel, actor=actor(request, body.actor), reason=body.reason), context(request).ops(), wid
    )
    return JSONResponse(result, status_code=202)


@router.post(
    "/api/ops/wf/{wid}/resume",
    openapi_extra=body(OpsActionBody),
    status_code=202,
    responses=answers(202, OpsAnswer, 409),
)
@requires("operator", hidden=not_found("workflow not found: {key}"))
async def resume_workflow(wid: str, request: Request) -> JSONResponse:
    """Resume from the last checkpoint, same id: 202; 409 unless CANCELLED/ENQUEUED (a cancelled run)."""
    strict_query(request, set())
    body = await parse_body(request, OpsActionBody)
    result = await run_in_threadpool(
        partial(workflows.resume, actor=actor(request, body.actor), reason=body.reason), context(request).ops(), wid
    )
    return JSONResponse(result, status_code=202)


@router.post(
    "/api/ops/wf/{wid}/fork", openapi_extra=body(ForkBody), status_code=202, responses=answers(202, OpsAnswer, 409)
)
@requires("operator", hidden=not_found("workflow not found: {key}"))
async def fork_workflow(wid: str, request: Request) -> JSONResponse:
    """Fork from step N (steps before N reused): 202 with ``forkedWorkflowID``; 409 past the last step."""
    strict_query(request, set())
    body = await parse_body(request, ForkBody)
    result = await run_in_threadpool(
        partial(
            workflows.fork,
            step_n=body.stepN,
            app_version=body.appVersion,
            actor=actor(request, body.actor),
            reason=body.reason,
        ),
        context(request).ops(),
        wid,
    )
    return JSONResponse(result, status_code=202)


# --- other ops endpoints --------------------------------------------------------------------------


@router.get(
    "/api/ops/queue-depth",
    openapi_extra=query(
        ("queueName", TEXT),
        ("status", {"type": "string", "enum": ["ENQUEUED", "PENDING", "DELAYED"]}),
        ("limit", integer(1, 200)),
    ),
    response_model=list[OpsAnswer],
)
@requires("viewer", scoping="cluster")
def queue_depth(request: Request) -> JSONResponse:
    """QueueDepthRow[]: ``queueName``, ``status`` (ENQUEUED|PENDING|DELAYED), ``limit``."""
    query = strict_query(request, {"queueName", "status", "limit"})
    status = query_text(query, "status")
    if status is not None and status not in {"ENQUEUED", "PENDING", "DELAYED"}:
        raise InvalidInput("status must be ENQUEUED, PENDING or DELAYED", [{"loc": ["query", "status"]}])
    rows = queues.depth(
        context(request).ops(),
        queue=query_text(query, "queueName"),
        status=status,
        limit=query_int(query, "limit", 20, 1, 200),
    )
    return JSONResponse(rows)


@router.get(
    "/api/ops/queue-fairness",
    openapi_extra=query(("queueName", TEXT), ("limit", integer(1, 1000))),
    response_model=list[OpsAnswer],
)
@requires("viewer", scoping="cluster")
def queue_fairness(request: Request) -> JSONResponse:
    """Per queue partition: waiting and running counts, oldest and newest."""
    query = strict_query(request, {"queueName", "limit"})
    ops = context(request).ops()
    rows = queues.fairness(ops, queue=query_text(query, "queueName"), limit=query_int(query, "limit", 200, 1, 1000))
    return JSONResponse(rows)


@router.get(
    "/api/ops/queue-priority",
    openapi_extra=query(("queueName", TEXT), ("windowSec", integer(1, 30 * 86400))),
    response_model=list[OpsAnswer],
)
@requires("viewer", scoping="cluster")
def queue_priority(request: Request) -> JSONResponse:
    """Per queue priority: counts and the mean enqueue→dequeue latency over ``windowSec`` (default 3600)."""
    query = strict_query(request, {"queueName", "windowSec"})
    rows = queues.priority(
        context(request).ops(),
        queue=query_text(query, "queueName"),
        window_s=query_int(query, "windowSec", 3600, 1, 30 * 86400),
    )
    return JSONResponse(rows)


@router.get("/api/ops/throughput", openapi_extra=query(("windowSec", integer(1, 30 * 86400))), response_model=OpsAnswer)
@requires("viewer", scoping="cluster")
def throughput(request: Request) -> JSONResponse:
    """Completions over ``windowSec`` (default 300), fairness, priority and run counts."""
    query = strict_query(request, {"windowSec"})
    window = query_int(query, "windowSec", 300, 1, 30 * 86400)
    return JSONResponse(queues.throughput(context(request).ops(), window_s=window))


@router.get("/api/ops/executors", response_model=OpsAnswer)
@requires("viewer", scoping="cluster")
def list_executors(request: Request) -> JSONResponse:
    """Workers with heartbeat age, version and leader; workflows awaiting recovery; stranded ones."""
    strict_query(request, set())
    return JSONResponse(executors.view(context(request).ops()))


@router.post(
    "/api/ops/sleep",
    openapi_extra=query(("wf", TEXT), ("sleep", integer(1, MAX_SLEEP_MS)), required=("wf",)),
    status_code=202,
    responses=answers(202, OpsAnswer, 409),
)
@requires("operator", scoping="cluster")
def durable_sleep(request: Request) -> JSONResponse:
    """Start the durable sleep ``wf`` for ``sleep`` ms (default 5000) on controlQ: 202 (a replay too)."""
    query = strict_query(request, {"wf", "sleep"})
    wf = query_text(query, "wf")
    if wf is None:
        raise InvalidInput("wf query param required", [{"loc": ["query", "wf"]}])
    sleep_ms = query_int(query, "sleep", 5000, 1, MAX_SLEEP_MS)
    ctx = context(request)
    with ctx.read() as conn:
        if runs.get(conn, wf) is not None:
            raise Conflict(f"workflow id {wf} belongs to a run")
        existing = dbos_workflows.get(conn, wf)
    if existing is not None and existing.name != SLEEP_WORKFLOW:
        raise Conflict(f"workflow id {wf} is in use by {existing.name}")
    start_sleep(ctx.client, workflow_id=wf, sleep_ms=sleep_ms, app_version=ctx.settings.app_version)
    body: dict[str, Any] = {"accepted": True, "workflowID": wf, "sleepMs": sleep_ms, "isReplay": existing is not None}
    return JSONResponse(body, status_code=202)
