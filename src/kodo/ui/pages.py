"""Console pages. Each handler reads through store/api projections and renders one template; the
``/ui/...`` fragments are what the script swaps in when the run's event stream says something changed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from kodo.api.access import partition_patterns, requires
from kodo.api.deps import ApiContext, context
from kodo.errors import NotFound
from kodo.ops import diagnosis
from kodo.ops import executions as execution_view
from kodo.store import artifacts, executions, patches, runs, steps
from kodo.store import gates as gate_store
from kodo.views.gates import gate_view, origins, sla_status
from kodo.views.reviews import change_view, gate_review
from kodo.views.runs import header, require_run, step_rows

router = APIRouter(include_in_schema=False)
_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value / 1000)
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else str(value)


_ENV.filters["when"] = _when
_ENV.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)


def _cell(value: Any) -> str:
    """Any value as table text: JSON for structures (dates, decimals as text), a dash for nothing."""
    if value is None:
        return "—"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, float):  # two decimals, or four significant digits below 1; no float noise
        text = f"{value:.2f}" if abs(value) >= 1 else f"{value:.4g}"
        return text.rstrip("0").rstrip(".") if "." in text and "e" not in text else text
    return str(value)


_ENV.filters["cell"] = _cell


def render(name: str, request: Request, **values: Any) -> HTMLResponse:
    ctx = context(request)
    settings = ctx.settings
    posture = {
        "topology": settings.mode_for(ctx.role),
        "agent": f"{settings.oc_mode}" + (f"/{settings.oc_provider}" if settings.oc_mode == "live" else ""),
        "sandbox": settings.sbx_mode + (f"/{settings.sbx_provider}" if settings.sbx_mode == "live" else ""),
        "appVersion": settings.app_version,
        "claimScope": settings.claim_scope,
        "unisolated": settings.unisolated_allowed,
    }
    html = _ENV.get_template(name).render(request=request, posture=posture, **values)
    return HTMLResponse(html)


def run_panel(ctx: ApiContext, conn: sa.Connection, key: str) -> dict[str, Any]:
    """Everything the live run panel shows."""
    run = require_run(conn, key)
    made = artifacts.refs_for_run(conn, run.id)
    replied = origins(conn, run.id)
    gate_rows = gate_store.list_for_run(conn, run.id)
    max_lines = ctx.settings.review_diff_max_lines
    return {
        "diagnosis": diagnosis.diagnose(ctx.ops(), run.workflow_id),
        "run": header(ctx, conn, run),
        "steps": step_rows(run, steps.list_for_run(conn, run.id), made, ctx.settings.trace_base_url),
        "gates": [gate_view(run.workflow_id, g, replied.get(g.gate_key)) for g in gate_rows],
        "reviews": {g.gate_key: gate_review(conn, run, g, max_lines) for g in gate_rows if g.resolved_at is None},
        "change": change_view(conn, run, max_lines),
        "artifacts": made,
        "patches": patches.list_for_run(conn, run.id),
        "executions": [execution_view.row(e) for e in executions.list_for_run(conn, run.id, limit=200)],
        "interactions": gate_store.interactions(conn, run.id, 200),
    }


def _missing(key: str, request: Request) -> HTMLResponse:
    """What a page answers for a run that does not exist — and for another tenant's."""
    return render("missing.html", request, what=f"run {key}", page="console")


@router.get("/", response_class=HTMLResponse)
@requires("viewer", scoping="filtered", hidden=_missing)
def home(request: Request) -> HTMLResponse:
    """The run console: submit a goal; recent runs. ``/?wid=<id>`` opens one run."""
    wid = request.query_params.get("wid")
    if wid:
        return run_page(wid, request)
    ctx = context(request)
    with ctx.read() as conn:
        recent = runs.recent(conn, 25, partition_patterns(request))
    return render("console.html", request, recent=recent, page="console")


@router.get("/runs/{wid}/view", response_class=HTMLResponse)
@requires("viewer", hidden=_missing)
def run_page(wid: str, request: Request) -> HTMLResponse:
    """One run: header, live timeline, gates, artifacts, patches, ledger."""
    ctx = context(request)
    with ctx.read() as conn:
        try:
            panel = run_panel(ctx, conn, wid)
        except NotFound:
            return render("missing.html", request, what=f"run {wid}", page="console")
    return render("run.html", request, page="console", **panel)


@router.get("/ui/runs/{wid}/panel", response_class=HTMLResponse)
@requires("viewer")
def run_panel_fragment(wid: str, request: Request) -> HTMLResponse:
    """The live part of the run page, for the script to swap in."""
    ctx = context(request)
    with ctx.read() as conn:
        panel = run_panel(ctx, conn, wid)
    return render("run_panel.html", request, **panel)


@router.get("/inbox", response_class=HTMLResponse)
@requires("viewer", scoping="filtered")
def inbox_page(request: Request) -> HTMLResponse:
    """Open gates across runs, soonest deadline first."""
    ctx = context(request)
    with ctx.read() as conn:
        open_gates = gate_store.open_gates(conn, 200, partition_patterns(request))
        rows = []
        for gate in open_gates:
            run = runs.get(conn, gate.run_id)
            if run is None:
                continue
            rows.append({"gate": gate, "run": run, "sla": sla_status(gate.deadline_at, datetime.now(UTC))})
    return render("inbox.html", request, rows=rows, page="inbox")
