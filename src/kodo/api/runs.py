"""Run routes: start, read (header, RunView, steps) and the legacy plan approval. Dual lookup everywhere."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from functools import partial
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kodo.api.access import actor, not_found, principal, requires
from kodo.api.answers import ApprovalAnswer, LegacyStartAnswer, RunHeaderAnswer, answers
from kodo.api.deps import DEPRECATION, context
from kodo.api.openapi import body, integer, query
from kodo.api.run_changes import read_until
from kodo.api.schemas import ApiRunBody, PlanApprovalBody, RunRequestBody, parse_body
from kodo.errors import Gone, InvalidInput, NotFound
from kodo.models import RUN_STATUSES, TERMINAL_HEADER_STATUSES, Run, header_status
from kodo.store import artifacts, durable_status, intents, steps
from kodo.views import Reads, read_by_key
from kodo.views.runs import (
    RunHeader,
    RunView,
    StepRow,
    header,
    read_header,
    read_header_on_loop,
    require_run,
    run_view,
    step_rows,
)
from kodo.workflows import gates
from kodo.workflows.queue_policy import admit
from kodo.workflows.runs import start_run

router = APIRouter()


def _intent_missing(reads: Reads, intent_id: str, message: str) -> NotFound | None:
    """A NotFound when the intent does not exist: asked only on a start's error path, so that a start of a
    missing intent answers 404 whatever else is wrong with it (the happy path's one check is
    ``start_run``'s)."""
    with reads.read() as conn:
        return NotFound(message) if intents.get(conn, intent_id) is None else None


async def _start(request: Request, intent_id: str, body: RunRequestBody, missing: str) -> tuple[RunHeader, bool]:
    ctx = context(request)
    fields = body.model_dump(exclude_none=True, exclude={"intentId"})
    who = principal(request)
    if who is not None and not who.everywhere:  # with tokens, a run's tenant is its token's
        fields["tenantId"] = who.tenant

    def _transaction() -> tuple[RunHeader, bool]:
        with ctx.transaction() as conn:
            start = admit(conn, ctx.settings, intent_id, fields)
            try:
                run, replay = start_run(conn, ctx.client, ctx.settings, start)
            except NotFound:  # the intent does not exist: the route's own words for it
                raise NotFound(missing) from None
            found = durable_status.run_with_durability(conn, run.id)  # the header's reads in one statement
            if found is None:  # pragma: no cover - the run row was written or read in this transaction
                raise NotFound(missing)
            return header(ctx, conn, *found), replay

    # Off the event loop: a route's database work (a commit waits for the disk) never stalls other requests.
    try:
        return await run_in_threadpool(_transaction)
    except InvalidInput as refused:
        raise (await run_in_threadpool(_intent_missing, ctx, intent_id, missing) or refused) from None


@router.post(
    "/api/runs",
    openapi_extra=body(ApiRunBody),
    status_code=201,
    responses={**answers(201, RunHeaderAnswer, 404, 409), 200: {"model": RunHeaderAnswer, "description": "A replay"}},
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
    view, replay = await _start(request, body.intentId, body, f"Intent not found: {body.intentId}")
    return JSONResponse({**view, "isReplay": replay}, status_code=200 if replay else 201)


@router.post(
    "/intents/{intent_id}/run",
    openapi_extra=body(RunRequestBody, required=False),
    status_code=202,
    responses=answers(202, LegacyStartAnswer, 409, 410),
)
@requires("approver", partition_field=("queuePartitionKey",), hidden=not_found("intent not found"))
async def start_legacy_run(intent_id: str, request: Request) -> JSONResponse:
    """Legacy start: 202 ``{runId, workflowId}`` for new and replayed starts alike."""
    ctx = context(request)
    if not ctx.settings.enable_legacy_run_routes:
        raise Gone("legacy route disabled; use POST /api/runs")
    try:
        body = await parse_body(request, RunRequestBody)
    except InvalidInput as refused:
        raise (await run_in_threadpool(_intent_missing, ctx, intent_id, "intent not found") or refused) from None
    if body.queuePartitionKey is None and ctx.settings.intent_queue_partition:
        # The legacy route predates the partition law: it starts in the intent's own partition.
        body = body.model_copy(update={"queuePartitionKey": f"legacy-{intent_id}"})
    view, _replay = await _start(request, intent_id, body, "intent not found")
    return JSONResponse(
        {"runId": view["runId"], "workflowId": view["workflowID"]}, status_code=202, headers=DEPRECATION
    )


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
    responses=answers(200, None),
)
@requires("viewer")
async def get_run_header(wid: str, request: Request) -> JSONResponse:
    """The RunHeader of a run, by run id or workflow id. ``?until=input`` (the run waits for a human, or has
    ended) or ``?until=end`` long-polls up to ``timeoutS`` (0..30, default 20) seconds; either way the answer
    is the header as it is then (the caller checks its status)."""
    ctx = context(request)
    long_poll = _long_poll(request)
    if long_poll is None:
        if ctx.loop_reads is not None:  # the read a polling client repeats: on the event loop, no thread hop
            return JSONResponse(await read_header_on_loop(ctx, ctx.loop_reads, wid))
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


@router.get(
    "/api/runs/{wid}/steps",
    openapi_extra=query(("limit", integer(1, 500)), ("offset", integer(0, 10**9))),
    response_model=list[StepRow],
)
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


@router.get("/runs/{run_key}", response_model=RunView)
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
    responses=answers(202, ApprovalAnswer, 409),
)
@requires("approver")
async def approve_plan(wid: str, request: Request) -> JSONResponse:
    """Approve the plan of a run (the plan gate's "yes"): 202 ``{accepted, runId, approvedAt}``."""
    return await _approve(request, wid, None)


@router.post(
    "/runs/{run_key}/approve-plan",
    openapi_extra=body(PlanApprovalBody),
    status_code=202,
    responses=answers(202, ApprovalAnswer, 409, 410),
)
@requires("approver")
async def approve_plan_legacy(run_key: str, request: Request) -> JSONResponse:
    """The legacy alias of approve-plan, with deprecation headers."""
    if not context(request).settings.enable_legacy_run_routes:
        raise Gone("legacy route disabled; use POST /api/runs/{wid}/approve-plan")
    return await _approve(request, run_key, DEPRECATION)
