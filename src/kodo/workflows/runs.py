"""``RunIntent``: the life of a run, and ``start_run``, the one way a run begins.

    begin → CompileST → [ask-user gate] → ApplyPatchST → plan-approval gate → DecideST
          → template resolution → [budget: fanout] → fan-out (ExecuteTask per task on sbxQ, id = taskKey)
          → [budget: completion] → ExecuteST (+ the recipe's eval checks) → [merge gate] → [DeliverST]

Every product step writes its ``app.run_steps`` row and artifacts in a datasource transaction,
so its rows commit with its DBOS checkpoint and SQL sees each step exactly once.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from dbos import DBOS, DBOSClient, EnqueueOptions

from kodo import telemetry
from kodo.errors import Conflict, IdentityDrift, NotFound, StepFailure
from kodo.identity import STEP_IDS, canonical, run_id_for
from kodo.models import Run, RunStart
from kodo.settings import Settings
from kodo.store import durable_status, intents, repairs, runs, steps
from kodo.workflows import (
    agents,
    budgets,
    escalation,
    gates,
    limits,
    merge_gate,
    observe,
    phases,
    tasks,
    templates,
)
from kodo.workflows.context import (
    FinishedJson,
    GateSnapshot,
    ParkJson,
    PhaseJson,
    Progress,
    RunContext,
)
from kodo.workflows.outputs import SandboxResponseJson
from kodo.workflows.queues import queue_partition
from kodo.workflows.runtime import services, transact

WORKFLOW_NAME = "RunIntent"
REPAIR_WORKFLOW = "RepairRun"
_DRIFT_FIELDS = (
    "intent_id",
    "intent_hash",
    "recipe_id",
    "recipe_v",
    "recipe_hash",
    "trace_id",
    "tenant_id",
    "queue_partition_key",
    "budget",
)


# --- starting a run (called by the API, CLI and UI; never inside a workflow) ---------------------


def _drift(existing: Run, start: RunStart) -> list[dict[str, Any]]:
    incoming = {
        "intent_id": start.intent_id,
        "intent_hash": start.intent_hash,
        "recipe_id": start.recipe_id,
        "recipe_v": start.recipe_v,
        "recipe_hash": start.recipe_hash,
        "trace_id": start.trace_id,
        "tenant_id": start.tenant_id,
        "queue_partition_key": start.queue_partition_key,
        "budget": start.budget,
    }
    found = []
    for name in _DRIFT_FIELDS:
        before, after = getattr(existing, name), incoming[name]
        if canonical(before) != canonical(after):
            found.append({"field": name, "existing": before, "incoming": after})
    return found


def start_run(conn: sa.Connection, client: DBOSClient, settings: Settings, start: RunStart) -> tuple[Run, bool]:
    """Insert the run row and enqueue its workflow in the same transaction; returns (run, is_replay).

    ``workflowID = intentId``: a second start of the same intent is the same run (replay), unless its
    identity fields differ (409 with ``drift``).
    """
    if intents.get(conn, start.intent_id) is None:
        raise NotFound(f"Intent not found: {start.intent_id}")
    workflow_id = start.intent_id
    run_id = run_id_for(workflow_id)
    created = runs.create(conn, run_id=run_id, workflow_id=workflow_id, start=start)
    if created is not None:
        options: EnqueueOptions = {
            "workflow_name": WORKFLOW_NAME,
            "queue_name": start.queue_name,
            "workflow_id": workflow_id,
            "priority": start.priority,
            "app_version": settings.app_version,
        }
        if settings.intent_queue_partition and start.queue_partition_key:
            options["queue_partition_key"] = queue_partition(start.queue_partition_key)
        elif start.deduplication_id:
            options["deduplication_id"] = start.deduplication_id
        if start.timeout_ms:
            options["workflow_timeout"] = start.timeout_ms / 1000
        trace_context = telemetry.current_context()
        if trace_context is not None:  # the run's spans join the trace of the request that started it
            options["otel_context"] = trace_context
        client.enqueue_in_transaction(conn, options, workflow_id)
        return created, False  # as inserted: the enqueue writes DBOS's tables, not the run row
    existing = runs.get(conn, workflow_id)
    if existing is None:  # pragma: no cover - the insert lost to a row that vanished
        raise Conflict(f"run for {workflow_id} could not be created")
    drift = _drift(existing, start)
    if drift:
        raise IdentityDrift(f"identity drift for workflow {workflow_id}", drift)
    return existing, True


# --- the story -----------------------------------------------------------------------------------


def _within_budget(ctx: RunContext, boundary: str, observed: dict[str, int]) -> None:
    """A runtime budget check (its BUDGET artifact is written by the check); raises on a violation."""
    violation = budgets.check(ctx, boundary, observed)
    if violation is not None:
        raise StepFailure("BUDGET_EXCEEDED", violation["message"])


def _park_result(ctx: RunContext, gate: GateSnapshot) -> ParkJson:
    return {"runId": ctx.run_id, "status": "waiting_input", "gateKey": gate.gate_key}


def drive(ctx: RunContext, done: Progress) -> ParkJson | FinishedJson:
    """Carry the run from where it stands (``done``: its progress) to its next gate (park) or its end.

    Every phase workflow (RunIntent, ResumeRun, RepairRun) calls this; completed steps are read back
    from ``app.run_steps`` (in the phase's first transaction) rather than run again.
    """
    with observe.bound(ctx.run_id, ctx.workflow_id):
        return _drive(ctx, done)


def _drive(ctx: RunContext, done: Progress) -> ParkJson | FinishedJson:
    try:
        if done.parked:  # the phase's first transaction parked it already (``phases._ahead``)
            return done.parked
        if done.failed:
            raise StepFailure(done.failed["code"], done.failed["message"])
        if merge_gate.past_tests(done):  # the merge gate's continuation: only the gate and the delivery are left
            return merge_gate.finish(ctx, done)
        plan = done.plan or agents.compile_plan(ctx)
        answer = None
        if plan.get("question"):
            ask = done.gates.get("ask-user")
            state = phases.gate_state(ask, ctx.generation)
            if state == "open" and ask is not None:
                return _park_result(ctx, ask)
            if state in {"none", "stale"}:
                return gates.park(
                    ctx,
                    purpose="ask-user",
                    next_action="ANSWER_QUESTION",
                    form={**gates.QUESTION_FORM, "description": str(plan["question"])},
                    ttl_s=ctx.plan_approval_timeout_s,
                )
            if state == "timed_out":
                raise StepFailure("GATE_TIMEOUT", "Ask-user gate timed out")
            answer = ask.payload if ask is not None else None
        approval = done.gates.get("approve-plan")
        state = phases.gate_state(approval, ctx.generation)
        approved = done.approved
        if approved is None and state in {"none", "stale"}:
            # The patches and the plan gate (parked, or resolved by autoApprove) commit as one operation.
            applied = transact("ApplyPatchST", phases.apply_then_gate, ctx, plan, phases.now())
            if applied["parked"] is not None:
                return applied["parked"]
            approved, state = applied["output"], "received"
        elif approved is None:
            approved = transact("ApplyPatchST", phases.apply_patches, ctx, plan, phases.now())
        if state == "open" and approval is not None:
            return _park_result(ctx, approval)
        if state in {"none", "stale"}:  # ApplyPatchST was done by an earlier phase: the gate on its own
            name = f"gate.{'auto' if ctx.auto_approve else 'park'}.approve-plan"
            parked = transact(name, phases.open_plan_gate, ctx)
            if parked is not None:
                return parked
        elif state == "timed_out":
            raise StepFailure("GATE_TIMEOUT", "Plan approval timed out")
        elif state == "rejected":
            decision = (approval.decision if approval is not None else None) or {}
            raise StepFailure(
                "PLAN_REJECTED",
                f"Plan approval failed: {decision.get('decision')} (rationale: {decision.get('rationale')})",
            )
        build = done.build or agents.decide(ctx, approved, answer)
        template = templates.resolve(ctx)
        if "error" in template:
            raise StepFailure(template["error"]["code"], template["error"]["message"])
        planned = tasks.plan_tasks(ctx, build, template)
        limits.check_planned(len(planned), services().settings)
        _within_budget(ctx, "fanout", {"maxFanout": len(planned)})
        results: list[SandboxResponseJson] = tasks.fan_out(
            planned, priority=ctx.priority, partition_key=ctx.partition_key
        )
        _within_budget(ctx, "completion", budgets.completion_usage(results))
        merged = tasks.execute(ctx, build, planned, results, phases.now())
        if merged["errCode"] != "NONE":
            raise StepFailure(merged["errCode"], f"SBX execution failed [{merged['errCode']}]")
        return merge_gate.finish(ctx, done, len(planned))  # [merge gate →] delivery, when the run asks for them
    except gates.Parked as parked:
        return parked.parked
    except StepFailure as failure:
        transact("fail", phases.fail, ctx, failure.code, failure.message)
        raise
    except Exception as exc:
        transact("fail", phases.fail, ctx, "INTERNAL", f"{type(exc).__name__}: {exc}")
        raise


def _drive_phase(phase: PhaseJson) -> ParkJson | FinishedJson:
    """Carry on from a phase's checkpointed first transaction (this kodo's, or an earlier one's)."""
    return drive(RunContext.from_checkpoint(phase["ctx"]), Progress.from_checkpoint(phase["done"]))


@DBOS.workflow(name=WORKFLOW_NAME, max_recovery_attempts=10)
def run_intent(workflow_id: str) -> ParkJson | FinishedJson:
    """The run's first phase (id = intentId): from the start to its first gate or its end."""
    failed = phases.prepare_workspace(workflow_id)
    return _drive_phase(transact("begin", phases.begin, workflow_id, workflow_id, True, None, failed))


@DBOS.workflow(name=gates.RESUME_WORKFLOW, max_recovery_attempts=10)
def resume_run(workflow_id: str, gate_key: str) -> ParkJson | FinishedJson:
    """A parked run's continuation: resolve the gate from the ledger (or as timed out), then go on."""
    failed = phases.prepare_workspace(workflow_id)
    phase = transact(
        "resume", phases.begin, workflow_id, gates.resume_id(workflow_id, gate_key), False, gate_key, failed
    )
    ctx, resolved = RunContext.from_checkpoint(phase["ctx"]), phase["resolved"]
    if resolved is not None and (resolved["result"] or {}).get("state") == "TIMED_OUT":
        escalation.escalate(ctx.workflow_id, ctx.run_id, gate_key)
    return drive(ctx, Progress.from_checkpoint(phase["done"]))


@DBOS.workflow(name=REPAIR_WORKFLOW, max_recovery_attempts=10)
def repair_run(workflow_id: str, attempt: int) -> ParkJson | FinishedJson:
    """A retry of a failed run: completed steps are reused, the first incomplete one runs again."""
    failed = phases.prepare_workspace(workflow_id)
    return _drive_phase(
        transact("load", phases.begin, workflow_id, repair_id(workflow_id, attempt), False, None, failed)
    )


# --- retry (called by the API and CLI) ------------------------------------------------------------


def repair_id(workflow_id: str, attempt: int) -> str:
    return f"repair:{workflow_id}:{attempt}"


def first_incomplete_step(conn: sa.Connection, run: Run) -> str:
    """The first product step without a successful record, else ExecuteST."""
    finished = {
        record.step_id
        for record in steps.latest_for_run(conn, run.id)
        if record.step_id != "ExecuteST" or record.output.get("errCode", "NONE") == "NONE"
    }
    return next((step for step in STEP_IDS if step not in finished), "ExecuteST")


def retry_run(
    conn: sa.Connection, client: DBOSClient, settings: Settings, run: Run, requested_by: str | None
) -> dict[str, Any]:
    """Start a repair of a failed run (new workflow id per attempt); 409 unless failed/retries_exceeded."""
    if run.status not in {"failed", "retries_exceeded"}:
        raise Conflict(f"cannot retry run in status {run.status}", status=run.status)
    attempt = repairs.next_attempt(conn, run.id)
    workflow_id = repair_id(run.workflow_id, attempt)
    from_step = first_incomplete_step(conn, run)
    repairs.record(
        conn, run_id=run.id, attempt=attempt, workflow_id=workflow_id, from_step=from_step, requested_by=requested_by
    )
    runs.update(
        conn,
        run.id,
        status="repairing",
        repair=True,
        increment_retry=True,
        next_action="NONE",
        clear_error=True,
        current_workflow_id=workflow_id,
    )
    options: EnqueueOptions = {
        "workflow_name": REPAIR_WORKFLOW,
        "queue_name": "intentQ",
        "workflow_id": workflow_id,
        "priority": int(run.options.get("priority") or 1),
        "app_version": settings.app_version,
    }
    if settings.intent_queue_partition and run.queue_partition_key:
        options["queue_partition_key"] = queue_partition(run.queue_partition_key)
    trace_context = telemetry.context_from_traceparent(durable_status.traceparent(conn, run.workflow_id))
    if trace_context is not None:  # a repair stays on the run's trace
        options["otel_context"] = trace_context
    client.enqueue_in_transaction(conn, options, run.workflow_id, attempt)
    return {"accepted": True, "newRunId": run.id, "fromStep": from_step, "repairWorkflowId": workflow_id}
