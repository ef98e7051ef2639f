"""Per-run evidence routes: why it is not moving, its repro pack, its proof cards and its sandbox executions
(all read-only)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from kodo.api.access import empty_list, not_found, requires
from kodo.api.answers import DiagnosisAnswer, OpsAnswer
from kodo.api.deps import context
from kodo.api.openapi import integer, query
from kodo.api.queries import query_int, strict_query
from kodo.ops import diagnosis, evidence, executions

router = APIRouter()


@router.get("/api/runs/{wid}/diagnosis", response_model=DiagnosisAnswer)
@requires("viewer", hidden=not_found("workflow not found: {key}"))
def run_diagnosis(wid: str, request: Request) -> JSONResponse:
    """A plain-language cause (``code`` + ``reason`` + ``details``) for a run or any workflow; 404 if unknown."""
    strict_query(request, set())
    return JSONResponse(diagnosis.diagnose(context(request).ops(), wid))


@router.get("/api/runs/{wid}/repro", response_model=OpsAnswer)
@requires("viewer")
def run_repro(wid: str, request: Request) -> Response:
    """ReproSnapshot as canonical JSON (app rows + DBOS workflows of the run); 404 ``run not found``."""
    strict_query(request, set())
    text = evidence.snapshot_text(context(request).ops(), wid)
    return Response(text, media_type="application/json")


@router.get("/api/runs/{wid}/proofs", response_model=list[OpsAnswer])
@requires("viewer", hidden=empty_list)
def run_proofs(wid: str, request: Request) -> JSONResponse:
    """ProofCard[], newest evidence first; an unknown run has none (``[]``)."""
    strict_query(request, set())
    return JSONResponse(evidence.proofs(context(request).ops(), wid))


@router.get(
    "/api/runs/{wid}/executions",
    openapi_extra=query(("limit", integer(1, executions.MAX_LIMIT)), ("offset", integer(0, 1_000_000))),
    response_model=list[OpsAnswer],
)
@requires("viewer")
def run_executions(wid: str, request: Request) -> JSONResponse:
    """ExecutionRow[] of the run's execution ledger, in the order they started (``limit`` 1..500, default 100,
    ``offset``); 404 ``run not found``."""
    found = strict_query(request, {"limit", "offset"})
    limit = query_int(found, "limit", 100, 1, executions.MAX_LIMIT)
    offset = query_int(found, "offset", 0, 0, 1_000_000)
    return JSONResponse(executions.for_run(context(request).ops(), wid, limit=limit, offset=offset))
