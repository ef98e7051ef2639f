"""Review routes: ``GET /api/runs/{wid}/diff`` (``text/x-diff``), the full diff that ApplyPatchST recorded
(artifact kind ``diff``), and ``GET /api/runs/{wid}/delivery``. The cards themselves are
:mod:`kodo.views.reviews`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from kodo.api.access import requires
from kodo.api.answers import RunDeliveryAnswer, media
from kodo.api.deps import context
from kodo.errors import InvalidInput, NotFound
from kodo.store import workspaces
from kodo.views.reviews import delivery_json, run_diff
from kodo.views.runs import require_run

router = APIRouter()


@router.get(
    "/api/runs/{wid}/diff",
    response_class=Response,
    responses=media(200, "text/x-diff", "The unified diff (empty when the patches changed nothing)"),
)
@requires("viewer")
def get_run_diff(wid: str, request: Request) -> Response:
    """The workspace's diff against the run's base commit, as reviewed at the plan gate (``text/x-diff``)."""
    if request.query_params:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(sorted(request.query_params))}")
    with context(request).read() as conn:
        run, text = run_diff(conn, wid)
    return Response(text, media_type="text/x-diff; charset=utf-8", headers={"X-Kodo-Run": run.id})


@router.get("/api/runs/{wid}/delivery", response_model=RunDeliveryAnswer)
@requires("viewer")
def get_run_delivery(wid: str, request: Request) -> JSONResponse:
    """The run's delivery (branch, commit or format-patch artifact, status); 404 when it was not delivered."""
    if request.query_params:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(sorted(request.query_params))}")
    with context(request).read() as conn:
        run = require_run(conn, wid)
        delivery = workspaces.get_delivery(conn, run.id)
    if delivery is None:
        raise NotFound(f"run {run.workflow_id} has no delivery")
    return JSONResponse(delivery_json(delivery))
