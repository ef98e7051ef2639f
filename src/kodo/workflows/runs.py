"""``RunIntent``: the life of a run, and ``start_run``, the one way a run begins.

    begin → CompileST → [ask-user gate] → ApplyPatchST → plan-approval gate → DecideST
          → template resolution → [budget: fanout] → fan-out (ExecuteTask per task on sbxQ, id = taskKey)
          → [budget: completion] → ExecuteST (+ the recipe's eval checks)

Every product step writes its ``app.run_steps`` row and artifacts in a datasource transaction,
so its rows commit with its DBOS checkpoint and SQL sees each step exactly once.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from typing import Any, TypedDict

import sqlalchemy as sa
from dbos import DBOS, DBOSClient, EnqueueOptions

from kodo import telemetry
from kodo.errors import Conflict, IdentityDrift, NotFound, StepFailure
from kodo.identity import STEP_IDS, artifact_uri, canonical, run_id_for
from kodo.models import STEP_PHASES, NewArtifact, Run, RunStart
from kodo.settings import Settings
from kodo.store import artifacts, durable_status, intents, repairs, runs, sandbox_runs, steps
from kodo.store import gates as gate_store
from kodo.store import patches as patch_store
from kodo.workflows import (
    agents,
    budgets,
    delivery,
    escalation,
    gates,
    limits,
    observe,
    patches,
    repositories,
    review,
    tasks,
    templates,
)
from kodo.workflows.context import (
    FailureJson,
    FinishedJson,
    GateSnapshot,
    GateSnapshotJson,
    IntentJson,
    ParkJson,
    PhaseJson,
    Progress,
    ProgressJson,
    RunContext,
    RunContextJson,
)
from kodo.workflows.outputs import PlanJson, SandboxResponseJson
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
    if runs.create(conn, run_id=run_id, workflow_id=workflow_id, start=start):
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
        run = runs.get(conn, run_id)
        assert run is not None
        return run, False
    existing = runs.get(conn, workflow_id)
    if existing is None:  # pragma: no cover - the insert lost to a row that vanished
        raise Conflict(f"run for {workflow_id} could not be created")
    drift = _drift(existing, start)
    if drift:
        raise IdentityDrift(f"identity drift for workflow {workflow_id}", drift)
    return existing, True


# --- the workflow's transactions ----------------------------------------------------------------


class AppliedJson(TypedDict):
    """ApplyPatchST with its plan gate, as checkpointed: the step's output and the park (None: approved)."""

    output: PlanJson
    parked: ParkJson | None


def _context(conn: sa.Connection, workflow_id: str, phase_id: str, starting: bool) -> RunContextJson:
    run = runs.get(conn, workflow_id)
    if run is None:
        raise StepFailure("RUN_NOT_FOUND", f"no run row for workflow {workflow_id}")
    intent = intents.get(conn, run.intent_id)
    if intent is None:
        raise StepFailure("INTENT_NOT_FOUND", f"no intent {run.intent_id} for run {run.id}")
    if starting:
        runs.update(conn, run.id, status="running", current_workflow_id=phase_id)
    settings = services().settings
    workspace = settings.workspaces_dir / run.id  # made (cloned) by ``_prepare_workspace``, outside this lock
    repo = intent.inputs.get("repo") if isinstance(intent.inputs.get("repo"), str) else None
    if workspace.exists():  # a failed clone records nothing, so the retry's clone records its base
        review.record_workspace(conn, run.id, workspace, repo)
    ttl = intent.constraints.get("planApprovalTimeoutS")
    intent_json: IntentJson = {"goal": intent.goal, "inputs": intent.inputs, "constraints": intent.constraints}
    if intent.connectors is not None:
        intent_json["connectors"] = intent.connectors
    return {
        "runId": run.id,
        "workflowId": run.workflow_id,
        "intentId": intent.id,
        "intent": intent_json,
        "generation": run.generation,
        "workload": run.options.get("workload"),
        "autoApprove": bool(run.options.get("autoApprove")),
        "priority": run.options.get("priority", 1),
        "partitionKey": run.queue_partition_key,
        "recipeId": run.recipe_id,
        "recipeV": run.recipe_v,
        "budget": run.budget,
        "tenantId": run.tenant_id,
        "workspace": str(workspace),
        "planApprovalTimeoutS": ttl if isinstance(ttl, int) and ttl > 0 else settings.hitl_plan_approval_timeout_s,
    }


def _progress(conn: sa.Connection, run_id: str) -> ProgressJson:
    """What the run has already done: latest step outputs and the newest gate of each purpose."""
    done: dict[str, dict[str, Any]] = {}
    for record in steps.latest_for_run(conn, run_id):
        if record.step_id == "ExecuteST" and record.output.get("errCode", "NONE") != "NONE":
            continue
        done[record.step_id] = record.output
    if "ApplyPatchST" in done and any(p.rolled_back_at is not None for p in patch_store.list_for_run(conn, run_id)):
        del done["ApplyPatchST"]  # its patches were rolled back: apply them again
    newest: dict[str, GateSnapshotJson] = {}
    for gate in reversed(gate_store.list_for_run(conn, run_id)):  # oldest first, so the newest wins
        newest[gate.purpose] = {
            "gateKey": gate.gate_key,
            "generation": gate.generation,
            "open": gate.is_open,
            "result": gate.result,
            "decision": gate.decision,
        }
    return {"steps": done, "gates": newest}


def _apply_patches(conn: sa.Connection, ctx: RunContext, plan: PlanJson, started_at: str) -> PlanJson:
    run_id, workspace = ctx.run_id, ctx.workspace
    attempt = steps.next_attempt(conn, run_id, "ApplyPatchST")
    made = []
    applied = patches.apply_plan(
        conn,
        services().engine,
        run_id=run_id,
        workspace=workspace,
        items=[dict(item) for item in plan.get("patchPlan") or []],
    )
    for index, payload in enumerate(applied):
        made.append(
            NewArtifact(
                step_id="ApplyPatchST",
                idx=index,
                kind="patch_apply",
                attempt=attempt,
                uri=artifact_uri(run_id, "ApplyPatchST", "", f"patch-{index}.json"),
                inline=payload,
            )
        )
    if not made:
        made.append(
            NewArtifact(
                step_id="ApplyPatchST",
                idx=999,
                kind="none",
                attempt=attempt,
                uri=artifact_uri(run_id, "ApplyPatchST", "", "none"),
                inline={"status": "no_artifacts"},
            )
        )
    reviewed = review.diff_artifact(conn, run_id, workspace, attempt)  # what the plan gate reviews
    made += [reviewed] if reviewed is not None else []
    artifacts.add_all(conn, run_id, made)
    output = plan.copy()
    output.pop("patchPlan", None)
    steps.record(
        conn,
        run_id=run_id,
        step_id="ApplyPatchST",
        attempt=attempt,
        phase=STEP_PHASES["ApplyPatchST"],
        output=dict(output),
        started_at=datetime.fromisoformat(started_at),
        **observe.step(ctx.workflow_id, "ApplyPatchST", attempt),
    )
    runs.update(conn, run_id, last_step="ApplyPatchST")
    return output


def _open_plan_gate(conn: sa.Connection, ctx: RunContext) -> ParkJson | None:
    """Open the plan gate in the caller's transaction: resolved "yes" by ``autoApprove`` (None), else parked."""
    if ctx.auto_approve:
        gates.auto_approve_in(conn, ctx)
        return None
    return gates.park_in(
        conn,
        ctx,
        purpose="approve-plan",
        next_action="APPROVE_PLAN",
        form=gates.APPROVE_FORM,
        ttl_s=ctx.plan_approval_timeout_s,
    )


def _apply_then_gate(conn: sa.Connection, ctx: RunContext, plan: PlanJson, started_at: str) -> AppliedJson:
    """ApplyPatchST, then its plan gate in the same transaction (``_open_plan_gate``)."""
    output = _apply_patches(conn, ctx, plan, started_at)
    return {"output": output, "parked": _open_plan_gate(conn, ctx)}


def _fail(conn: sa.Connection, ctx: RunContext, code: str, message: str) -> None:
    run_id = ctx.run_id
    if code == "SBX_RETRIES_EXHAUSTED":
        last = [row["err_code"] for row in sandbox_runs.list_for_run(conn, run_id) if row["err_code"] != "NONE"]
        if last:
            message = f"{message} [{last[-1]}]"
    try:
        patches.rollback_all(conn, run_id=run_id, workspace=ctx.workspace)
    except StepFailure as rollback_error:
        code, message = (
            "APPLY_PATCH_ROLLBACK_FAILED",
            f"APPLY_PATCH_ROLLBACK_FAILED:{rollback_error};source={message}",
        )
    agents.release_holds(conn, run_id)
    runs.update(
        conn,
        run_id,
        status="retries_exceeded",
        next_action="REPAIR",
        error={"code": code, "message": message},
    )


# --- the story -----------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _gate_state(gate: GateSnapshot | None, generation: int) -> str:
    """none | open | received | rejected | timed_out | stale (a failure of an earlier generation)."""
    if gate is None:
        return "none"
    if gate.is_open:
        return "open"
    state = gate.state
    yes = (gate.decision or {"decision": "yes"}).get("decision") == "yes"
    if state == "RECEIVED" and yes:
        return "received"
    if gate.generation < generation:
        return "stale"
    return "timed_out" if state == "TIMED_OUT" else "rejected"


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
        if done.parked:  # the phase's first transaction parked it already (``_ahead``)
            return done.parked
        if done.failed:
            raise StepFailure(done.failed["code"], done.failed["message"])
        plan = done.plan or agents.compile_plan(ctx)
        answer = None
        if plan.get("question"):
            ask = done.gates.get("ask-user")
            state = _gate_state(ask, ctx.generation)
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
        state = _gate_state(approval, ctx.generation)
        approved = done.approved
        if approved is None and state in {"none", "stale"}:
            # The patches and the plan gate (parked, or resolved by autoApprove) commit as one operation.
            applied = transact("ApplyPatchST", _apply_then_gate, ctx, plan, _now())
            if applied["parked"] is not None:
                return applied["parked"]
            approved, state = applied["output"], "received"
        elif approved is None:
            approved = transact("ApplyPatchST", _apply_patches, ctx, plan, _now())
        if state == "open" and approval is not None:
            return _park_result(ctx, approval)
        if state in {"none", "stale"}:  # ApplyPatchST was done by an earlier phase: the gate on its own
            name = f"gate.{'auto' if ctx.auto_approve else 'park'}.approve-plan"
            parked = transact(name, _open_plan_gate, ctx)
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
        merged = tasks.execute(ctx, build, planned, results, _now())
        if merged["errCode"] != "NONE":
            raise StepFailure(merged["errCode"], f"SBX execution failed [{merged['errCode']}]")
        if delivery.requested(ctx):  # the reviewed change leaves kodo (a failed delivery does not fail the run)
            delivery.deliver_step(ctx.run_id)
        return {"runId": ctx.run_id, "status": "succeeded", "tasks": len(planned)}
    except gates.Parked as parked:
        return parked.parked
    except StepFailure as failure:
        transact("fail", _fail, ctx, failure.code, failure.message)
        raise
    except Exception as exc:
        transact("fail", _fail, ctx, "INTERNAL", f"{type(exc).__name__}: {exc}")
        raise


def _begin(
    conn: sa.Connection,
    workflow_id: str,
    phase_id: str,
    starting: bool,
    gate_key: str | None,
    workspace_error: FailureJson | None = None,
) -> PhaseJson:
    """A phase's first transaction: its context, the parked gate resolved (a continuation), its progress,
    and, for a local agent, the phase's next steps as far as they are pure (see ``_ahead``). A workspace
    that could not be made (``workspace_error``) fails the phase here, before any step."""
    raw = _context(conn, workflow_id, phase_id, starting)
    ctx = RunContext.from_checkpoint(raw)
    resolved = gates.resolve_in(conn, ctx, gate_key) if gate_key is not None else None
    done = _progress(conn, ctx.run_id)
    if workspace_error is not None:  # no workspace could be made: the phase fails the run with the reason
        done["failed"] = workspace_error
        return {"ctx": raw, "resolved": resolved, "done": done}
    if agents.is_local():
        with observe.bound(ctx.run_id, ctx.workflow_id):
            taken, outcome = _ahead(conn, ctx, Progress.from_checkpoint(done))
        if outcome.parked is not None:  # parked or failed: ``_drive`` stops there and reads nothing else
            done["parked"] = outcome.parked
        elif outcome.failed is not None:
            done["failed"] = outcome.failed
        elif taken:
            done = _progress(conn, ctx.run_id)
    return {"ctx": raw, "resolved": resolved, "done": done}


def _ahead(conn: sa.Connection, ctx: RunContext, done: Progress) -> tuple[bool, Progress]:
    """A local agent is pure, so the phase's first transaction also takes its next steps: CompileST,
    ApplyPatchST with its plan gate (parked, or resolved by ``autoApprove``), DecideST, up to the first
    gate, question or fan-out. One DBOS operation instead of up to three; every step row still commits
    with that operation's checkpoint.

    Each step has its own savepoint. An agent step that fails is rolled back and left to the usual path
    (which fails it again, ledger row and all); a patch that fails is handed on as ``failed`` to the
    usual failure handling. Returns whether any step was taken, and ``parked``/``failed`` if so.
    """
    taken, nothing = False, Progress()
    try:
        plan = done.plan
        if plan is None:
            with telemetry.span("CompileST"), conn.begin_nested():  # each step its own span, as on the usual path
                plan = agents.compile_plan_in(conn, ctx)
            taken = True
        if plan.get("question"):
            return taken, nothing
        state = _gate_state(done.gates.get("approve-plan"), ctx.generation)
        approved = done.approved
        if approved is None and state in {"none", "stale"}:
            try:
                with telemetry.span("ApplyPatchST"), conn.begin_nested():
                    applied = _apply_then_gate(conn, ctx, plan, _now())
            except StepFailure as failure:
                return True, Progress(failed={"code": failure.code, "message": failure.message})
            if applied["parked"] is not None:
                return True, Progress(parked=applied["parked"])
            approved, state, taken = applied["output"], "received", True
        if approved is None or state != "received" or "DecideST" in done.steps:
            return taken, nothing
        with telemetry.span("DecideST"), conn.begin_nested():
            agents.decide_in(conn, ctx, approved)
        return True, nothing
    except StepFailure:
        return taken, nothing


def _prepare_workspace(workflow_id: str) -> FailureJson | None:
    """Make the run's workspace (a clone of ``inputs.repo``) before the phase's first transaction, so no row
    lock is held while it clones: approvals and cancels of the run answer at once. Idempotent (a finished
    clone is kept, and a recovered run keeps the clone it made), so it needs no checkpoint of its own;
    ``_begin`` reports a missing run or intent. The repository is checked again here (``REPO_NOT_ALLOWED``)
    and cloned from its checked real path. Returns why no workspace could be made (``{code, message}``: the
    phase then fails with it; a retry tries again)."""
    settings = services().settings
    with services().engine.connect() as conn:
        run = runs.get(conn, workflow_id)
        intent = intents.get(conn, run.intent_id) if run is not None else None
    if run is None or intent is None:
        return None
    workspace = settings.workspaces_dir / run.id
    if workspace.exists():
        return None
    try:
        source = repositories.workspace_source(intent.inputs, settings)
    except StepFailure as failure:  # nothing cloned
        return {"code": failure.code, "message": failure.message}
    try:
        patches.prepare_workspace(workspace, source)
    except (OSError, subprocess.SubprocessError) as error:
        message = f"{type(error).__name__}: {error}"
        return {"code": "WORKSPACE_CLONE_FAILED", "message": f"WORKSPACE_CLONE_FAILED:{message}"}
    return None


def _drive_phase(phase: PhaseJson) -> ParkJson | FinishedJson:
    """Carry on from a phase's checkpointed first transaction (this kodo's, or an earlier one's)."""
    return drive(RunContext.from_checkpoint(phase["ctx"]), Progress.from_checkpoint(phase["done"]))


@DBOS.workflow(name=WORKFLOW_NAME, max_recovery_attempts=10)
def run_intent(workflow_id: str) -> ParkJson | FinishedJson:
    """The run's first phase (id = intentId): from the start to its first gate or its end."""
    failed = _prepare_workspace(workflow_id)
    return _drive_phase(transact("begin", _begin, workflow_id, workflow_id, True, None, failed))


@DBOS.workflow(name=gates.RESUME_WORKFLOW, max_recovery_attempts=10)
def resume_run(workflow_id: str, gate_key: str) -> ParkJson | FinishedJson:
    """A parked run's continuation: resolve the gate from the ledger (or as timed out), then go on."""
    failed = _prepare_workspace(workflow_id)
    phase = transact("resume", _begin, workflow_id, gates.resume_id(workflow_id, gate_key), False, gate_key, failed)
    ctx, resolved = RunContext.from_checkpoint(phase["ctx"]), phase["resolved"]
    if resolved is not None and (resolved["result"] or {}).get("state") == "TIMED_OUT":
        escalation.escalate(ctx.workflow_id, ctx.run_id, gate_key)
    return drive(ctx, Progress.from_checkpoint(phase["done"]))


@DBOS.workflow(name=REPAIR_WORKFLOW, max_recovery_attempts=10)
def repair_run(workflow_id: str, attempt: int) -> ParkJson | FinishedJson:
    """A retry of a failed run: completed steps are reused, the first incomplete one runs again."""
    failed = _prepare_workspace(workflow_id)
    return _drive_phase(transact("load", _begin, workflow_id, repair_id(workflow_id, attempt), False, None, failed))


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
