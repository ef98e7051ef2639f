"""Why is this run (or workflow) not moving? One plain-language answer with a stable ``code``.

Checked in this order, for a run (its current phase workflow and that phase's children):

* ``CANCELLED``       cancelled by A at T for reason R (from the OPS audit)
* ``SUCCEEDED`` / ``FAILED``   it is finished (with its error and next action)
* ``WAITING_ON_GATE`` waiting on gate G (purpose, next action) since T, deadline D
* ``NO_LIVE_WORKER``  queued (or owned by a dead executor) for version V that no live worker serves
* ``DEAD_EXECUTOR``   owned by executor E, silent for N s; the recovery leader will resume it
* ``OWNER_SILENT``    owned by executor E whose heartbeat is overdue (more than two intervals old), not
                      yet declared dead: what a kill -9 looks like in its first ``KODO_EXECUTOR_DEAD_AFTER_SEC``
* ``STRANDED``        PENDING on a live executor with no thread running it, since T; its watchdog recovers it
* ``QUEUE_NOT_REGISTERED`` / ``MISSING_PARTITION``  DBOS's silent forever-states
* ``QUEUED_BEHIND``   queued behind N in partition P of queue Q (R running, A ahead)
* ``DELAYED``         delayed until T
* ``RETRYING_STEP``   retrying step S (task K) attempt k of 3 after CODE
* ``RECOVERING``      re-running after a crash (recovery attempt k)
* ``REPAIRING`` / ``RUNNING``  working: the latest checkpointed step and since when
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from kodo.models import RETRYABLE_SANDBOX_CODES, Run
from kodo.ops.context import Ops
from kodo.ops.stranded import grace_sec
from kodo.ops.targets import resolve
from kodo.store import dbos_workflows, executors, gates, ops_audit, repairs, sandbox_runs, stranded
from kodo.store.dbos_workflows import WorkflowRow

INTERNAL_QUEUE = "_dbos_internal_queue"
STEP_ATTEMPTS = 3


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _answer(code: str, text: str, **details: Any) -> dict[str, Any]:
    return {"code": code, "reason": text, "details": {k: v for k, v in details.items() if v is not None}}


def _cancelled(conn: sa.Connection, anchors: list[str], what: str) -> dict[str, Any]:
    found = ops_audit.list_for(conn, anchors, op="cancel", limit=1)
    if not found:
        return _answer("CANCELLED", f"{what} was cancelled (no operator audit: a workflow timeout or DBOS itself)")
    audit = found[0].inline
    return _answer(
        "CANCELLED",
        f"{what} was cancelled by {audit.get('actor')} at {audit.get('at')} for reason: {audit.get('reason')}",
        actor=audit.get("actor"),
        reason=audit.get("reason"),
        at=audit.get("at"),
        workflowID=audit.get("targetWorkflowID"),
    )


def overdue(ops: Ops, owner: executors.Executor) -> bool:
    """The owner missed its heartbeats: none for more than two intervals (and it did not stop cleanly)."""
    return owner.stopped_at is None and owner.heartbeat_age_ms > 2 * ops.settings.heartbeat_interval_sec * 1000


def _silent(ops: Ops, owner: executors.Executor, name: str, common: dict[str, Any]) -> dict[str, Any]:
    dead_after = ops.settings.executor_dead_after_sec
    return _answer(
        "OWNER_SILENT",
        f"{name} is owned by executor {owner.executor_id}, whose heartbeat is overdue: silent for "
        f"{owner.heartbeat_age_ms // 1000}s (it beats every {ops.settings.heartbeat_interval_sec:g}s). It may have "
        f"crashed; it is declared dead after {dead_after:g}s, and the recovery leader then resumes its work",
        executorId=owner.executor_id,
        heartbeatAgeMs=owner.heartbeat_age_ms,
        deadAfterSec=dead_after,
        **common,
    )


def diagnose_workflow(conn: sa.Connection, ops: Ops, row: WorkflowRow, *, anchors: list[str]) -> dict[str, Any]:
    """The cause for one DBOS workflow (a run's phase, a child, or any workflow)."""
    dead_after = ops.settings.executor_dead_after_sec
    live = executors.live_versions(conn, dead_after)
    name = f"workflow {row.workflow_id} ({row.name})"
    common = {"workflowID": row.workflow_id, "dbosStatus": row.status, "appVersion": row.app_version}
    if row.status == "CANCELLED":
        return _cancelled(conn, anchors, name)
    if row.status == "SUCCESS":
        return _answer("SUCCEEDED", f"{name} finished successfully at {_iso(row.updated_at)}", **common)
    if row.status in {"ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}:
        return _answer("FAILED", f"{name} ended in {row.status}", **common)
    if row.status in {"ENQUEUED", "PENDING"} and row.app_version not in live:
        serving = ", ".join(f"{v} on {', '.join(ids)}" for v, ids in sorted(live.items())) or "none"
        return _answer(
            "NO_LIVE_WORKER",
            f"{name} is {row.status} for application version {row.app_version}, and no live worker serves "
            f"that version (live workers: {serving})",
            liveVersions=live,
            **common,
        )
    if row.status == "DELAYED":
        return _answer(
            "DELAYED", f"{name} is delayed until {_iso(row.delay_until)}", delayUntil=row.delay_until, **common
        )
    if row.status == "ENQUEUED":
        return _queued(conn, row, name, common)
    return _pending(conn, ops, row, name, common, anchors)


def _queued(conn: sa.Connection, row: WorkflowRow, name: str, common: dict[str, Any]) -> dict[str, Any]:
    queue = dbos_workflows.queue(conn, row.queue_name or "") if row.queue_name else None
    if row.queue_name and row.queue_name != INTERNAL_QUEUE and queue is None:
        return _answer(
            "QUEUE_NOT_REGISTERED", f"{name} waits on queue {row.queue_name}, which no worker registered", **common
        )
    partitioned = queue is not None and any(
        queue.get(key) is not None for key in ("partition_concurrency", "partition_worker_concurrency")
    )
    if partitioned and row.partition_key is None:
        return _answer(
            "MISSING_PARTITION", f"{name} is on partitioned queue {row.queue_name} without a partition key", **common
        )
    running, ahead = dbos_workflows.position(conn, row)
    where = (
        f"partition {row.partition_key} of queue {row.queue_name}" if row.partition_key else f"queue {row.queue_name}"
    )
    return _answer(
        "QUEUED_BEHIND",
        f"{name} is queued behind {running + ahead} in {where} ({running} running, {ahead} queued ahead; "
        f"priority {row.priority})",
        queue=row.queue_name,
        partition=row.partition_key,
        running=running,
        ahead=ahead,
        behind=running + ahead,
        **common,
    )


def _pending(
    conn: sa.Connection, ops: Ops, row: WorkflowRow, name: str, common: dict[str, Any], anchors: list[str]
) -> dict[str, Any]:
    owner = executors.get(conn, row.executor_id) if row.executor_id else None
    dead_after = ops.settings.executor_dead_after_sec
    if owner is not None and not owner.alive(dead_after):
        return _answer(
            "DEAD_EXECUTOR",
            f"{name} is owned by executor {owner.executor_id}, silent for {owner.heartbeat_age_ms // 1000}s; the "
            f"recovery leader resumes it on a live {row.app_version} worker",
            executorId=owner.executor_id,
            heartbeatAgeMs=owner.heartbeat_age_ms,
            **common,
        )
    if owner is not None and overdue(ops, owner):
        return _silent(ops, owner, name, common)
    strand = stranded.of_workflows(conn, [row.workflow_id]).get(row.workflow_id)
    # Named only once the watchdog itself would act (its grace): a workflow seen without a thread for a moment
    # (a handoff between threads, a busy pool) is not stranded.
    if strand is not None and (strand.recovered_at is not None or strand.age_ms >= grace_sec(ops.settings) * 1000):
        state = "re-enqueued, restarting" if strand.recovered_at is not None else "recovering"
        return _answer(
            "STRANDED",
            f"{name} is stranded since {strand.since.isoformat()} (PENDING on {strand.executor_id} with no thread "
            f"running it), {state}",
            executorId=strand.executor_id,
            strandedSince=strand.since.isoformat(),
            recoveredAt=strand.recovered_at.isoformat() if strand.recovered_at else None,
            **common,
        )
    for child in dbos_workflows.children(conn, row.workflow_id):
        if child.status in {"ENQUEUED", "PENDING", "DELAYED"}:
            found = _child(conn, ops, row, child, anchors)
            if found is not None:
                return found
    if (row.recovery_attempts or 0) > 1:
        return _answer(
            "RECOVERING",
            f"{name} is running again after a crash (recovery attempt {row.recovery_attempts})",
            recoveryAttempts=row.recovery_attempts,
            **common,
        )
    last = dbos_workflows.last_step(conn, row.workflow_id)
    step, at = (None, None) if last is None else (last.function_name, last.completed_at_epoch_ms)
    since = f"; last checkpoint {step} at {_iso(at)}" if step else ""
    return _answer("RUNNING", f"{name} is running on {row.executor_id}{since}", executorId=row.executor_id, **common)


def _child(
    conn: sa.Connection, ops: Ops, parent: WorkflowRow, child: WorkflowRow, anchors: list[str]
) -> dict[str, Any] | None:
    if child.name == "ExecuteTask" and child.status == "PENDING" and parent.run_id:
        attempts = [r for r in sandbox_runs.list_for_run(conn, parent.run_id) if r["task_key"] == child.workflow_id]
        if attempts and attempts[-1]["err_code"] in RETRYABLE_SANDBOX_CODES:
            k = len(attempts) + 1
            code = attempts[-1]["err_code"]
            return _answer(
                "RETRYING_STEP",
                f"retrying step ExecuteST (task {child.workflow_id[:12]}…) attempt {k} of {STEP_ATTEMPTS} after {code}",
                step="ExecuteST",
                taskKey=child.workflow_id,
                attempt=k,
                maxAttempts=STEP_ATTEMPTS,
                lastError=code,
                workflowID=child.workflow_id,
            )
    if child.status == "PENDING" and (child.recovery_attempts or 0) <= 1:
        owner = executors.get(conn, child.executor_id) if child.executor_id else None
        if owner is None or (owner.alive(ops.settings.executor_dead_after_sec) and not overdue(ops, owner)):
            return None
    found = diagnose_workflow(conn, ops, child, anchors=anchors)
    found["details"]["childOf"] = parent.workflow_id
    return found


def _run_cause(conn: sa.Connection, ops: Ops, run: Run) -> dict[str, Any]:
    what = f"run {run.id}"
    if run.status == "canceled":
        return _cancelled(conn, [run.id], what)
    if run.status == "succeeded":
        return _answer("SUCCEEDED", f"{what} succeeded (last step {run.last_step})")
    if run.status in {"failed", "retries_exceeded"}:
        error = run.error or {}
        return _answer(
            "FAILED",
            f"{what} ended {run.status}: {error.get('code')}: {error.get('message')}; next action "
            f"{run.next_action} (POST /runs/{run.id}/retry)",
            error=error,
            nextAction=run.next_action,
        )
    if run.status == "waiting_input":
        for gate in gates.list_for_run(conn, run.id):
            if gate.is_open:
                deadline = gate.deadline_at.isoformat() if gate.deadline_at else "none"
                return _answer(
                    "WAITING_ON_GATE",
                    f"{what} is waiting on gate {gate.gate_key} ({gate.purpose}, next action {gate.next_action}) "
                    f"since {gate.created_at.isoformat()}; deadline {deadline}",
                    gateKey=gate.gate_key,
                    purpose=gate.purpose,
                    since=gate.created_at.isoformat(),
                    deadline=gate.deadline_at.isoformat() if gate.deadline_at else None,
                    nextAction=gate.next_action,
                    resumeWorkflowID=gate.resume_workflow_id,
                )
    phase = run.current_workflow_id or run.workflow_id
    row = dbos_workflows.get(conn, phase)
    if row is None:
        return _answer("STALLED", f"{what} names phase workflow {phase}, which DBOS does not have")
    found = diagnose_workflow(conn, ops, row, anchors=[run.id, phase])
    if run.status == "repairing" and found["code"] in {"RUNNING", "QUEUED_BEHIND"}:
        repair = repairs.latest(conn, run.id)
        if repair is not None:
            found["details"].update({"repairAttempt": repair.attempt, "fromStep": repair.from_step})
            if found["code"] == "RUNNING":
                found["code"] = "REPAIRING"
                found["reason"] = (
                    f"{what} is retrying from step {repair.from_step} (repair attempt {repair.attempt}); "
                    + found["reason"]
                )
    return found


def diagnose(ops: Ops, key: str) -> dict[str, Any]:
    """``GET /api/runs/{wid}/diagnosis`` and ``kodo ops why <id>`` (never writes)."""
    with ops.engine.connect() as conn:
        target = resolve(conn, key)
        if target.run is not None:
            run = target.run
            found = _run_cause(conn, ops, run)
            header: dict[str, Any] = {
                "workflowID": run.workflow_id,
                "runId": run.id,
                "runStatus": run.status,
                "phaseWorkflowID": run.current_workflow_id or run.workflow_id,
            }
        else:
            assert target.workflow is not None
            found = diagnose_workflow(conn, ops, target.workflow, anchors=[target.workflow.workflow_id])
            header = {"workflowID": target.workflow.workflow_id, "runId": None, "runStatus": None}
    return {**header, **found, "checkedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
