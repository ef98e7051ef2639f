"""``RunIntent``: the life of a run, and ``start_run``, the one way a run begins.

    begin → CompileST → [ask-user gate] → ApplyPatchST → plan-approval gate → DecideST
          → fan-out (ExecuteTask per task on sbxQ, id = taskKey) → ExecuteST

Every product step writes its ``app.run_steps`` row and artifacts in a datasource transaction,
so its rows commit with its DBOS checkpoint and SQL sees each step exactly once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, DBOSClient, EnqueueOptions

from kodo.errors import Conflict, IdentityDrift, NotFound, StepFailure
from kodo.identity import artifact_uri, canonical, gate_key_for, run_id_for, task_key_for
from kodo.models import STEP_PHASES, NewArtifact, Run, RunStart
from kodo.settings import Settings
from kodo.store import artifacts, intents, receipts, runs, sandbox_runs, steps
from kodo.workflows import agents, gates, patches
from kodo.workflows.queues import partition_for
from kodo.workflows.runtime import services, transact

WORKFLOW_NAME = "RunIntent"
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
            options["queue_partition_key"] = start.queue_partition_key
        elif start.deduplication_id:
            options["deduplication_id"] = start.deduplication_id
        if start.timeout_ms:
            options["workflow_timeout"] = start.timeout_ms / 1000
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


def _begin(conn: sa.Connection, workflow_id: str) -> dict[str, Any]:
    run = runs.get(conn, workflow_id)
    if run is None:
        raise StepFailure("RUN_NOT_FOUND", f"no run row for workflow {workflow_id}")
    intent = intents.get(conn, run.intent_id)
    if intent is None:
        raise StepFailure("INTENT_NOT_FOUND", f"no intent {run.intent_id} for run {run.id}")
    runs.update(conn, run.id, status="running")
    settings = services().settings
    workspace = settings.workspaces_dir / run.id
    repo = intent.inputs.get("repo") if isinstance(intent.inputs.get("repo"), str) else None
    patches.prepare_workspace(workspace, repo)
    ttl = intent.constraints.get("planApprovalTimeoutS")
    return {
        "runId": run.id,
        "workflowId": run.workflow_id,
        "intentId": intent.id,
        "intent": intent.as_json(),
        "workload": run.options.get("workload"),
        "autoApprove": bool(run.options.get("autoApprove")),
        "priority": run.options.get("priority", 1),
        "partitionKey": run.queue_partition_key,
        "workspace": str(workspace),
        "planApprovalTimeoutS": ttl if isinstance(ttl, int) and ttl > 0 else settings.hitl_plan_approval_timeout_s,
    }


def _apply_patches(conn: sa.Connection, ctx: dict[str, Any], plan: dict[str, Any], started_at: str) -> dict[str, Any]:
    run_id, workspace = ctx["runId"], Path(ctx["workspace"])
    attempt = steps.next_attempt(conn, run_id, "ApplyPatchST")
    made = []
    for index, item in enumerate(plan.get("patchPlan") or []):
        payload = patches.apply(conn, run_id=run_id, workspace=workspace, index=index, item=item)
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
    for artifact in made:
        artifacts.add(conn, run_id, artifact)
    output = {key: value for key, value in plan.items() if key != "patchPlan"}
    steps.record(
        conn,
        run_id=run_id,
        step_id="ApplyPatchST",
        attempt=attempt,
        phase=STEP_PHASES["ApplyPatchST"],
        output=output,
        started_at=datetime.fromisoformat(started_at),
    )
    runs.update(conn, run_id, last_step="ApplyPatchST")
    return output


def _merge(tasks: list[dict[str, Any]], results: list[dict[str, Any]]) -> dict[str, Any]:
    codes = [r.get("errCode", "NONE") for r in results]
    failed = next((r for r in results if r.get("errCode", "NONE") != "NONE"), None)
    metrics = [r.get("metrics", {}) for r in results]
    return {
        "exit": failed["exit"] if failed else 0,
        "stdout": "\n---\n".join(r.get("stdout", "") for r in results),
        "stderr": "\n---\n".join(r.get("stderr", "") for r in results),
        "filesOut": [f for r in results for f in r.get("filesOut", [])],
        "metrics": {
            "wallMs": max((m.get("wallMs", 0) for m in metrics), default=0),
            "cpuMs": sum(m.get("cpuMs", 0) for m in metrics),
            "memPeakMB": max((m.get("memPeakMB", 0) for m in metrics), default=0),
        },
        "sandboxRef": ",".join(r.get("sandboxRef", "") for r in results),
        "errCode": next((c for c in codes if c != "NONE"), "NONE"),
        "taskKey": "aggregated",
        "artifactIndexRef": ",".join(r.get("artifactIndexRef", "") for r in results),
        "raw": {
            "attempt": max((r.get("attempt", 1) for r in results), default=1),
            "tasks": [
                {
                    "taskKey": t["taskKey"],
                    "cmd": t["cmd"],
                    "errCode": r.get("errCode"),
                    "exit": r.get("exit"),
                    "artifactIndexRef": r.get("artifactIndexRef"),
                    "metrics": r.get("metrics"),
                    "attempt": r.get("attempt", 1),
                }
                for t, r in zip(tasks, results, strict=True)
            ],
        },
    }


def _execute(
    conn: sa.Connection,
    ctx: dict[str, Any],
    build: dict[str, Any],
    tasks: list[dict[str, Any]],
    results: list[dict[str, Any]],
    started_at: str,
) -> dict[str, Any]:
    run_id = ctx["runId"]
    merged = _merge(tasks, results)
    attempt = steps.next_attempt(conn, run_id, "ExecuteST")
    seen = receipts.record(
        conn,
        run_id=run_id,
        step_id="ExecuteST",
        attempt=attempt,
        request={"decision": build, "tasks": [t["taskKey"] for t in tasks]},
        response=merged,
    )
    if seen > 1:
        raise Conflict(f"duplicate side effect receipt for {run_id} ExecuteST")
    steps.record(
        conn,
        run_id=run_id,
        step_id="ExecuteST",
        attempt=attempt,
        phase=STEP_PHASES["ExecuteST"],
        output=merged,
        started_at=datetime.fromisoformat(started_at),
    )
    if merged["errCode"] == "NONE":
        runs.update(conn, run_id, status="succeeded", last_step="ExecuteST", clear_next_action=True)
    else:
        runs.update(conn, run_id, last_step="ExecuteST")
    return merged


def _fail(conn: sa.Connection, ctx: dict[str, Any], code: str, message: str) -> None:
    run_id = ctx["runId"]
    if code == "SBX_RETRIES_EXHAUSTED":
        last = [row["err_code"] for row in sandbox_runs.list_for_run(conn, run_id) if row["err_code"] != "NONE"]
        if last:
            message = f"{message} [{last[-1]}]"
    try:
        patches.rollback_all(conn, run_id=run_id, workspace=Path(ctx["workspace"]))
    except StepFailure as rollback_error:
        code, message = (
            "APPLY_PATCH_ROLLBACK_FAILED",
            f"APPLY_PATCH_ROLLBACK_FAILED:{rollback_error};source={message}",
        )
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


def plan_tasks(ctx: dict[str, Any], build: dict[str, Any]) -> list[dict[str, Any]]:
    """One task per test (``<test_command> <test>``), or one task running the command as is."""
    settings = services().settings
    command = str(build["test_command"])
    tests = [str(t) for t in build.get("tests", [])]
    commands: list[tuple[str, str | None]] = [(f"{command} {test}", test) for test in tests] or [(command, None)]
    tasks = []
    for cmd, test in commands:
        request = {
            "cmd": cmd,
            "test": test,
            "templateKey": "env:local-python-3.11",
            "templateRef": "local-python-3.11",
        }
        tasks.append(
            {
                "taskKey": task_key_for(ctx["intentId"], ctx["runId"], request),
                "runId": ctx["runId"],
                "cmd": cmd,
                "workdir": ctx["workspace"],
                "timeoutMs": settings.sbx_default_timeout_ms,
                "net": settings.sbx_default_net,
            }
        )
    return tasks


def fan_out(ctx: dict[str, Any], tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Start one ExecuteTask child per task on sbxQ (id = taskKey) and wait for all of them."""
    settings = services().settings
    handles = []
    for task in tasks:
        options: EnqueueOptions = {
            "workflow_name": "ExecuteTask",
            "queue_name": "sbxQ",
            "workflow_id": task["taskKey"],
            "priority": int(ctx.get("priority") or 1),
            "app_version": settings.app_version,
        }
        partition = partition_for(settings, ctx.get("partitionKey"))
        if partition:
            options["queue_partition_key"] = partition
        handles.append(DBOS.enqueue_workflow_with_options(options, task))
    results = []
    for handle in handles:
        try:
            results.append(handle.get_result(polling_interval_sec=settings.queue_polling_interval_sec))
        except Exception as exc:
            raise StepFailure(
                "SBX_RETRIES_EXHAUSTED", f"sandbox task {handle.get_workflow_id()} failed: {exc}"
            ) from exc
    return results


@DBOS.workflow(name=WORKFLOW_NAME, max_recovery_attempts=10)
def run_intent(workflow_id: str) -> dict[str, Any]:
    """The run: plan, patch, approve, decide, fan out, execute."""
    ctx = transact("begin", _begin, workflow_id)
    try:
        plan = agents.compile_plan(ctx)
        if plan.get("question"):
            gate_key = gate_key_for(ctx["runId"], "CompileST", "ask-user")
            answer, _at = gates.wait_for_human(
                ctx,
                gate_key=gate_key,
                purpose="ask-user",
                next_action="ANSWER_QUESTION",
                form=gates.QUESTION_FORM,
                ttl_s=ctx["planApprovalTimeoutS"],
            )
            if answer is None:
                raise StepFailure("GATE_TIMEOUT", "Ask-user gate timed out")
        approved_plan = transact("ApplyPatchST", _apply_patches, ctx, plan, _now())
        gate_key = gate_key_for(ctx["runId"], "ApplyPatchST", "approve-plan")
        decision = gates.approve_plan(ctx, gate_key, ctx["planApprovalTimeoutS"])
        if decision["decision"] != "yes":
            raise StepFailure(
                "PLAN_REJECTED",
                f"Plan approval failed: {decision['decision']} (rationale: {decision['rationale']})",
            )
        build = agents.decide(ctx, approved_plan)
        tasks = plan_tasks(ctx, build)
        results = fan_out(ctx, tasks)
        merged = transact("ExecuteST", _execute, ctx, build, tasks, results, _now())
        if merged["errCode"] != "NONE":
            raise StepFailure(merged["errCode"], f"SBX execution failed [{merged['errCode']}]")
        return {"runId": ctx["runId"], "status": "succeeded", "tasks": len(tasks)}
    except StepFailure as failure:
        transact("fail", _fail, ctx, failure.code, failure.message)
        raise
    except Exception as exc:
        transact("fail", _fail, ctx, "INTERNAL", f"{type(exc).__name__}: {exc}")
        raise
