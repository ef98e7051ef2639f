"""The runbooks' proof routes: ``POST /crashdemo?wf=``, ``GET /marks?wf=`` (and the slow step twins)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from kodo.api.access import requires
from kodo.api.deps import context
from kodo.errors import InvalidInput
from kodo.store import marks
from kodo.workflows.proofs import start_proof

router = APIRouter()


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
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidInput("sleep must be a positive integer (milliseconds)")
    return int(raw)


@router.post("/crashdemo")
@requires("operator", scoping="cluster")
def crashdemo(request: Request) -> JSONResponse:
    """Start the crash demo (mark s1, durable sleep WF_SLEEP_MS, mark s2): 202."""
    ctx = context(request)
    wf = _wf(request)
    sleep_ms = _sleep(request, ctx.settings.wf_sleep_ms)
    start_proof(ctx.client, name="CrashDemo", workflow_id=wf, sleep_ms=sleep_ms, app_version=ctx.settings.app_version)
    return JSONResponse({"accepted": True, "workflowId": wf}, status_code=202)


@router.post("/slowstep")
@requires("operator", scoping="cluster")
def slowstep(request: Request) -> JSONResponse:
    """Start the slow-step fixture (mark s1, sleep, mark s2): 202."""
    ctx = context(request)
    wf = _wf(request)
    sleep_ms = _sleep(request, 5000)
    start_proof(ctx.client, name="SlowStep", workflow_id=wf, sleep_ms=sleep_ms, app_version=ctx.settings.app_version)
    return JSONResponse({"accepted": True, "workflowId": wf}, status_code=202)


@router.get("/marks")
@requires("viewer", scoping="cluster")
def get_marks(request: Request) -> JSONResponse:
    """``{"s1": n, "s2": n}``: how often each side effect happened."""
    ctx = context(request)
    wf = _wf(request)
    with ctx.read() as conn:
        return JSONResponse(marks.counts(conn, wf))


@router.get("/slowmarks")
@requires("viewer", scoping="cluster")
def get_slowmarks(request: Request) -> JSONResponse:
    """The slow step's marks, same shape as ``/marks``."""
    return get_marks(request)
