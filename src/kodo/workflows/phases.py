"""A phase's first transaction and the steps it may take at once (``begin``), and the transactions the story in
:mod:`kodo.workflows.runs` runs: ApplyPatchST with its plan gate, and a run's failure.

``begin`` reads the run and its intent into the run context (checkpointed as ``RunContextJson``), resolves a
continuation's gate from the ledger, and reads what the run has already done (``ProgressJson``); a local agent's
next pure steps are taken in the same transaction (``_ahead``).
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from typing import Any, TypedDict

import sqlalchemy as sa

from kodo import telemetry
from kodo.errors import StepFailure
from kodo.identity import artifact_uri, run_id_for
from kodo.models import STEP_PHASES, NewArtifact
from kodo.store import artifacts, intents, runs, sandbox_runs, steps
from kodo.store import gates as gate_store
from kodo.store import patches as patch_store
from kodo.workflows import agents, gates, observe, patches, repositories, review
from kodo.workflows.context import (
    FailureJson,
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
from kodo.workflows.outputs import PlanJson
from kodo.workflows.runtime import services


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
    workspace = settings.workspaces_dir / run.id  # made (cloned) by ``prepare_workspace``, outside this lock
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


def apply_patches(conn: sa.Connection, ctx: RunContext, plan: PlanJson, started_at: str) -> PlanJson:
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


def open_plan_gate(conn: sa.Connection, ctx: RunContext) -> ParkJson | None:
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


def apply_then_gate(conn: sa.Connection, ctx: RunContext, plan: PlanJson, started_at: str) -> AppliedJson:
    """ApplyPatchST, then its plan gate in the same transaction (``open_plan_gate``)."""
    output = apply_patches(conn, ctx, plan, started_at)
    return {"output": output, "parked": open_plan_gate(conn, ctx)}


def fail(conn: sa.Connection, ctx: RunContext, code: str, message: str) -> None:
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


def now() -> str:
    return datetime.now(UTC).isoformat()


def gate_state(gate: GateSnapshot | None, generation: int) -> str:
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


def begin(
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
        state = gate_state(done.gates.get("approve-plan"), ctx.generation)
        approved = done.approved
        if approved is None and state in {"none", "stale"}:
            try:
                with telemetry.span("ApplyPatchST"), conn.begin_nested():
                    applied = apply_then_gate(conn, ctx, plan, now())
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


def prepare_workspace(workflow_id: str) -> FailureJson | None:
    """Make the run's workspace (a clone of ``inputs.repo``) before the phase's first transaction, so no row
    lock is held while it clones: approvals and cancels of the run answer at once. Idempotent (a finished
    clone is kept, and a recovered run keeps the clone it made), so it needs no checkpoint of its own;
    ``begin`` reports a missing run or intent. The repository is checked again here (``REPO_NOT_ALLOWED``)
    and cloned from its checked real path. Returns why no workspace could be made (``{code, message}``: the
    phase then fails with it; a retry tries again)."""
    settings = services().settings
    if (settings.workspaces_dir / run_id_for(workflow_id)).exists():  # a continuation: made by an earlier phase
        return None
    with services().engine.connect() as conn:
        run = runs.get(conn, workflow_id)
        intent = intents.get(conn, run.intent_id) if run is not None else None
    if run is None or intent is None:
        return None
    workspace = settings.workspaces_dir / run.id
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
