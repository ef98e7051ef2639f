"""Console pages for operators: the ops console (workflows, detail, actions), throughput and recipes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from kodo.api.access import principal, requires
from kodo.api.deps import context
from kodo.errors import KodoError
from kodo.ops import executors, queues, workflows
from kodo.store import recipe_versions, webhooks
from kodo.store.dbos_workflows import Filter
from kodo.ui.pages import render
from kodo.workflows import recipes

router = APIRouter(include_in_schema=False)
STATUSES = ("ENQUEUED", "DELAYED", "PENDING", "SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")


@router.get("/ops", response_class=HTMLResponse)
def ops_page(request: Request) -> HTMLResponse:
    """Workflows with filters; ``?wid=`` opens one with its steps, audit and the cancel/resume/fork form."""
    ops = context(request).ops()
    query = request.query_params
    status = query.get("status") or ""
    where = Filter(
        statuses=[status] if status in STATUSES else [],
        queues=[query["queue"]] if query.get("queue") else [],
        partitions=[query["partition"]] if query.get("partition") else [],
        hide_internal=query.get("hideInternal", "1") == "1",
        limit=100,
    )
    listed = workflows.list_workflows(ops, where)
    who = principal(request)
    dead = None
    if who is None or who.allows("operator"):  # the delivery routes' own role (their URLs and errors)
        with context(request).read() as conn:
            dead = webhooks.list_deliveries(conn, tenant=None, state="dead", subscription_id=None, limit=50)
    detail = steps = None
    problem = None
    wid = query.get("wid")
    if wid:
        try:
            detail = workflows.get_workflow(ops, wid)
            steps = workflows.steps(ops, wid)
        except KodoError as error:
            problem = error.message
    return render(
        "ops.html",
        request,
        page="ops",
        workflows=listed,
        detail=detail,
        steps=steps,
        problem=problem,
        filters={
            "status": status,
            "queue": query.get("queue", ""),
            "partition": query.get("partition", ""),
            "hideInternal": where.hide_internal,
        },
        statuses=STATUSES,
        depth=queues.depth(ops, queue=None, status=None, limit=50),
        fairness=queues.fairness(ops, queue=None, limit=50),
        executors=executors.view(ops),
        dead_deliveries=None
        if dead is None
        else [
            {
                "id": d.id,
                "event": d.event_type,
                "url": d.url,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "updated": d.updated_at.isoformat(timespec="seconds"),
            }
            for d in dead
        ],
    )


@router.get("/throughput", response_class=HTMLResponse)
def throughput_page(request: Request) -> HTMLResponse:
    """Throughput, queue depth, fairness by partition, priority latency, executors."""
    ops = context(request).ops()
    return render(
        "throughput.html",
        request,
        page="throughput",
        throughput=queues.throughput(ops, window_s=3600),
        depth=queues.depth(ops, queue=None, status=None, limit=50),
        fairness=queues.fairness(ops, queue=None, limit=100),
        priority=queues.priority(ops, queue=None, limit=100),
        executors=executors.view(ops),
    )


@router.get("/recipes", response_class=HTMLResponse)
@requires("viewer", scoping="shared")
def recipes_page(request: Request) -> HTMLResponse:
    """The recipe registry; ``?id=`` shows a recipe's versions and a start form for its stable one."""
    ctx = context(request)
    chosen = request.query_params.get("id")
    with ctx.read() as conn:
        registry = recipes.registry(conn)
        versions = (
            [recipes.version_row(conn, v) | {"spec": v.spec} for v in recipe_versions.list_versions(conn, chosen)]
            if chosen
            else []
        )
    return render("recipes.html", request, page="recipes", registry=registry, chosen=chosen, versions=versions)
