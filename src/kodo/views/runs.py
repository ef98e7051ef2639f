"""A run as answers show it: the RunHeader (app status merged with DBOS's, plus the serving posture), its
step rows, and the legacy RunView. Reads only; a missing run is :class:`kodo.errors.NotFound`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NotRequired

import sqlalchemy as sa
from anyio import to_thread
from typing_extensions import TypedDict

from kodo import telemetry
from kodo.errors import NotFound
from kodo.models import Run, StepRecord, header_status
from kodo.store import budgets, durable_status, eval_results, runs
from kodo.store.artifacts import ArtifactRef
from kodo.store.async_connections import AsyncConnections
from kodo.store.durable_status import RunDurability
from kodo.views import Serving, epoch_ms
from kodo.views.artifacts import ArtifactRefView, artifact_ref
from kodo.workflows import spend
from kodo.workflows.runs import WORKFLOW_NAME


class RecipeRef(TypedDict):
    id: str
    v: str | None


# The JSON keys of a RunHeader (camelCase: this is what leaves the process).
class RunHeader(TypedDict):
    workflowID: str
    runId: str
    intentId: str
    status: str
    durableStatus: str
    dbosStatus: str | None
    workflowName: str
    currentWorkflowID: str
    recipeRef: RecipeRef | None
    recipeHash: str | None
    intentHash: str | None
    createdAt: int | None
    updatedAt: int | None
    queue: str | None
    priority: int | None
    lane: str | None
    queuePartitionKey: str | None
    tenantId: str | None
    budget: dict[str, int | float] | None
    budgetViolation: dict[str, Any] | None
    spend: dict[str, Any]
    evalSummary: dict[str, int] | None
    nextAction: str | None
    lastStep: str | None
    retryCount: int
    traceId: str | None
    spanId: None
    topology: str
    runtimeMode: str
    ocMode: str
    ocStrictMode: bool
    sbxMode: str
    sbxProvider: str
    sbxUnisolatedAllowed: bool
    appVersion: str
    workflowVersion: str | None
    claimScope: str
    error: NotRequired[dict[str, Any]]
    otelTraceId: str | None
    traceUrl: str | None
    traceBaseUrl: NotRequired[str]


class StepRow(TypedDict):
    """One step attempt with its artifact refs (``GET /api/runs/{wid}/steps``)."""

    stepID: str
    name: str
    attempt: int
    startedAt: int | None
    endedAt: int | None
    artifactRefs: list[ArtifactRefView]
    traceId: str | None
    spanId: str | None
    traceUrl: str | None
    error: NotRequired[Any]


class LegacyStep(TypedDict):
    stepId: str
    phase: str
    attempt: int
    output: dict[str, Any]
    startedAt: str
    finishedAt: str | None
    traceId: str | None
    spanId: str | None


class LegacyArtifact(TypedDict):
    kind: str
    uri: str
    sha256: str
    size: int


class RunView(TypedDict):
    """The legacy RunView of ``GET /runs/{id}``."""

    runId: str
    workflowId: str
    intentId: str
    recipeRef: RecipeRef | None
    recipeHash: str | None
    intentHash: str | None
    status: str
    steps: list[LegacyStep]
    artifacts: list[LegacyArtifact]
    traceId: str | None
    lastStep: str | None
    retryCount: int
    error: NotRequired[dict[str, Any]]
    nextAction: NotRequired[str]


def require_run(conn: sa.Connection, key: str) -> Run:
    """The run by run id or workflow id; 404 when there is none."""
    run = runs.get(conn, key)
    if run is None:
        raise NotFound("run not found")
    return run


def _recipe_ref(run: Run) -> RecipeRef | None:
    return {"id": run.recipe_id, "v": run.recipe_v} if run.recipe_id else None


@dataclass(frozen=True, slots=True)
class HeaderReads:
    """What a header reads beyond the run row and its durability: for a run with a budget, a recipe or a tenant."""

    budget_violation: dict[str, Any] | None
    spend: dict[str, Any]
    eval_summary: dict[str, int] | None


def header_reads(conn: sa.Connection, run: Run, facts: RunDurability) -> HeaderReads:
    return HeaderReads(
        budget_violation=budgets.latest_violation(conn, run.id) if run.budget else None,
        spend=spend.header(conn, run, datetime.now(UTC), facts.spend),
        eval_summary=eval_results.summary(conn, run.id) if run.recipe_id else None,
    )


def plain_reads(run: Run, facts: RunDurability) -> HeaderReads | None:
    """``header_reads`` without a connection, for a run with no budget, recipe or tenant (whose header reads
    nothing beyond its row, durability and spend); None for any other run."""
    if run.budget or run.recipe_id or run.tenant_id or facts.spend is None:
        return None
    return HeaderReads(budget_violation=None, spend=spend.header_of(facts.spend, {}, None), eval_summary=None)


def header(ctx: Serving, conn: sa.Connection, run: Run, facts: RunDurability | None = None) -> RunHeader:
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
    return header_of(ctx, run, facts, header_reads(conn, run, facts))


def header_of(ctx: Serving, run: Run, facts: RunDurability, reads: HeaderReads) -> RunHeader:
    """The RunHeader from what was read (``header``, or the API's event-loop read of a run that needs no more)."""
    durable = facts.status
    settings = ctx.settings
    trace_id = telemetry.trace_id_of(facts.traceparent) or facts.step_trace_id
    body: RunHeader = {
        "workflowID": run.workflow_id,
        "runId": run.id,
        "intentId": run.intent_id,
        "status": header_status(run.status, durable.status if durable else None),
        "durableStatus": run.status,
        "dbosStatus": durable.status if durable else None,
        "workflowName": WORKFLOW_NAME,
        "currentWorkflowID": run.current_workflow_id or run.workflow_id,
        "recipeRef": _recipe_ref(run),
        "recipeHash": run.recipe_hash,
        "intentHash": run.intent_hash,
        "createdAt": epoch_ms(run.created_at),
        "updatedAt": epoch_ms(run.updated_at),
        "queue": run.options.get("queueName"),
        "priority": run.options.get("priority"),
        "lane": run.options.get("lane"),
        "queuePartitionKey": run.queue_partition_key,
        "tenantId": run.tenant_id,
        "budget": run.budget,
        "budgetViolation": reads.budget_violation,
        "spend": reads.spend,
        "evalSummary": reads.eval_summary,
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
        "otelTraceId": trace_id,
        "traceUrl": telemetry.trace_link(settings.trace_base_url, trace_id),
    }
    if run.error is not None:
        body["error"] = run.error
    if settings.trace_base_url:
        body["traceBaseUrl"] = settings.trace_base_url
    return body


def read_header(ctx: Serving, key: str) -> RunHeader:
    """The RunHeader, by run id or workflow id (one statement)."""
    with ctx.read() as conn:
        found = durable_status.run_with_durability(conn, key)
        if found is None:
            raise NotFound("run not found")
        return header(ctx, conn, *found)


async def read_header_on_loop(ctx: Serving, connections: AsyncConnections, key: str) -> RunHeader:
    """``read_header`` on the event loop (``AsyncConnections``), the same statement and answer without a worker
    thread; a run with a budget, recipe or tenant reads the rest on one, as ``read_header`` does."""
    found = await durable_status.fetch_run_with_durability(connections, key)
    if found is None:
        raise NotFound("run not found")
    run, facts = found
    reads = plain_reads(run, facts)
    if reads is None:
        return await to_thread.run_sync(_header_read_on_thread, ctx, run, facts)
    return header_of(ctx, run, facts, reads)


def _header_read_on_thread(ctx: Serving, run: Run, facts: RunDurability) -> RunHeader:
    with ctx.read() as conn:
        return header(ctx, conn, run, facts)


def step_rows(
    run: Run, records: list[StepRecord], made: list[ArtifactRef], trace_base_url: str | None = None
) -> list[StepRow]:
    """StepRow[]: every attempt with its artifacts (same step and attempt), by startedAt then stepID, and a
    ``traceUrl`` (``TRACE_BASE_URL`` made concrete) when the attempt was traced."""
    rows = []
    for record in records:
        refs = [artifact_ref(run, a) for a in made if a.step_id == record.step_id and a.attempt == record.attempt]
        row: StepRow = {
            "stepID": record.step_id,
            "name": record.phase,
            "attempt": record.attempt,
            "startedAt": epoch_ms(record.started_at),
            "endedAt": epoch_ms(record.finished_at),
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


def run_view(run: Run, latest: list[StepRecord], made: list[ArtifactRef]) -> RunView:
    """The legacy RunView of ``GET /runs/{id}``."""
    view: RunView = {
        "runId": run.id,
        "workflowId": run.workflow_id,
        "intentId": run.intent_id,
        "recipeRef": _recipe_ref(run),
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
