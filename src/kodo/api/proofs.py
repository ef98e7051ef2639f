"""The runbooks' proof routes: ``POST /crashdemo?wf=``, ``GET /marks?wf=`` (and the slow step twins)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from kodo.api.access import requires
from kodo.api.answers import AcceptedAnswer, answers
from kodo.api.deps import ApiContext, context
from kodo.api.openapi import TEXT, integer, query
from kodo.errors import Conflict, InvalidInput
from kodo.store import dbos_workflows, marks
from kodo.workflows.proofs import start_proof

router = APIRouter()
_WF_SLEEP = query(("wf", TEXT), ("sleep", integer(1, 2**31 - 1)), required=("wf",))


def _wf(request: Request) -> str:
    unknown = set(request.query_params) - {"wf", "sleep"}
    if unknown:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    wf = request.query_params.get("wf", "").strip()
    if not wf:
        raise InvalidInput("wf query param required")
    return wf


def _sleep(request: Request, default: int) -> int:
    raw = request.query_params.get("sleep")
    if raw is None:
        return default
    if not raw.isdecimal() or int(raw) < 1:
        raise InvalidInput("sleep must be a positive integer (milliseconds)")
    return int(raw)


def _start(ctx: ApiContext, name: str, wf: str, sleep_ms: int) -> None:
    """Enqueue the proof workflow ``name`` as ``wf``; an id taken by another kind of workflow is a 409."""
    with ctx.read() as conn:
        existing = dbos_workflows.get(conn, wf)
    if existing is not None and existing.name != name:
        raise Conflict(f"workflow id {wf} is in use by {existing.name}")
    start_proof(ctx.client, name=name, workflow_id=wf, sleep_ms=sleep_ms, app_version=ctx.settings.app_version)


@router.post("/crashdemo", openapi_extra=_WF_SLEEP, status_code=202, responses=answers(202, AcceptedAnswer, 409))
@requires("operator", scoping="cluster")
def crashdemo(request: Request) -> JSONResponse:
    """Start the crash demo (mark s1, durable sleep WF_SLEEP_MS, mark s2): 202."""
    ctx = context(request)
    wf = _wf(request)
    sleep_ms = _sleep(request, ctx.settings.wf_sleep_ms)
    _start(ctx, "CrashDemo", wf, sleep_ms)
    return JSONResponse({"accepted": True, "workflowId": wf}, status_code=202)


@router.post("/slowstep", openapi_extra=_WF_SLEEP, status_code=202, responses=answers(202, AcceptedAnswer, 409))
@requires("operator", scoping="cluster")
def slowstep(request: Request) -> JSONResponse:
    """Start the slow-step fixture (mark s1, sleep, mark s2): 202."""
    ctx = context(request)
    wf = _wf(request)
    sleep_ms = _sleep(request, 5000)
    _start(ctx, "SlowStep", wf, sleep_ms)
    return JSONResponse({"accepted": True, "workflowId": wf}, status_code=202)


@router.get("/marks", openapi_extra=_WF_SLEEP, response_model=dict[str, int])
@requires("viewer", scoping="cluster")
def get_marks(request: Request) -> JSONResponse:
    """``{"s1": n, "s2": n}``: how often each side effect happened."""
    ctx = context(request)
    wf = _wf(request)
    with ctx.read() as conn:
        return JSONResponse(marks.counts(conn, wf))


@router.get("/slowmarks", openapi_extra=_WF_SLEEP, response_model=dict[str, int])
@requires("viewer", scoping="cluster")
def get_slowmarks(request: Request) -> JSONResponse:
    """The slow step's marks, same shape as ``/marks``."""
    return get_marks(request)
