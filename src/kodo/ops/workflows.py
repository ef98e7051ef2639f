"""The six workflow operations (reference §12.1): list, get, steps, cancel, resume, fork.

Ids: any DBOS workflow id, or a run's id / workflow id / current phase id (dual lookup). Cancel and
resume of a *run* act on the run's phase workflows and its ``app.runs`` row (``ops.run_control``);
everything else is DBOS's own semantics on the DBOS workflow id. GETs never write. Every mutation
needs a non-blank actor and reason, checks its state guard before writing anything, and writes one
``OPS`` audit row.

Atomic: cancel and resume make the DBOS change (SQL on ``dbos.workflow_status``, ``store.dbos_control``),
the run row and the audit row in one transaction. A fork is DBOS's own transaction, so it is written
ahead (``app.ops_intents``, with the forked id chosen here) and audited once the forked workflow exists,
by the fork itself or, after a crash, by :func:`reconcile` (at the start of every mutation and in each
round of the recovery leader).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from dbos import SetWorkflowID
from dbos import error as dbos_errors

from kodo import faults
from kodo.errors import Conflict, NotFound
from kodo.ops import run_control
from kodo.ops.context import Ops, require_text
from kodo.ops.targets import Target, audit, audit_payload, audit_rows, resolve, summary
from kodo.store import dbos_control, dbos_workflows, ops_audit, ops_intents
from kodo.store.dbos_workflows import Filter, WorkflowRow

CANCELLABLE = ("PENDING", "ENQUEUED", "DELAYED")
RESUMABLE = ("CANCELLED", "ENQUEUED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
FORK_GRACE = timedelta(minutes=5)  # a pending fork intent this old whose workflow never appeared is abandoned


# --- reads -----------------------------------------------------------------------------------------


def list_workflows(ops: Ops, where: Filter) -> list[dict[str, Any]]:
    with ops.engine.connect() as conn:
        return [summary(row) for row in dbos_workflows.select(conn, where)]


def get_workflow(ops: Ops, key: str) -> dict[str, Any]:
    """Summary + the run it belongs to + its children + audit (newest first)."""
    with ops.engine.connect() as conn:
        target = resolve(conn, key)
        row = target.workflow
        body: dict[str, Any] = summary(row) if row else {"workflowID": key, "status": None}
        run = target.run
        if run is not None:
            body["run"] = {
                "runId": run.id,
                "workflowID": run.workflow_id,
                "status": run.status,
                "nextAction": run.next_action,
                "currentWorkflowID": run.current_workflow_id or run.workflow_id,
                "retryCount": run.retry_count,
            }
        body["children"] = [summary(c) for c in dbos_workflows.children(conn, row.workflow_id)] if row else []
        anchors = [target.anchor] + ([row.workflow_id] if row and row.workflow_id != target.anchor else [])
        body["audit"] = audit_rows(conn, anchors)
        return body


def _dbos_id(ops: Ops, key: str) -> tuple[Target, WorkflowRow]:
    with ops.engine.connect() as conn:
        target = resolve(conn, key)
    if target.workflow is None:
        raise NotFound(f"workflow not found: {key}")
    return target, target.workflow


def steps(ops: Ops, key: str) -> list[dict[str, Any]]:
    """WorkflowStepSummary[]: DBOS's checkpoints of the workflow, in function-id order."""
    _target, row = _dbos_id(ops, key)
    found = []
    for step in ops.client.list_workflow_steps(row.workflow_id, load_output=False):
        error = step.get("error")
        item: dict[str, Any] = {
            "stepId": step["function_name"],
            "functionId": step["function_id"],
            "status": "ERROR" if error is not None else ("SUCCESS" if step.get("completed_at_epoch_ms") else "PENDING"),
            "startedAt": step.get("started_at_epoch_ms"),
            "completedAt": step.get("completed_at_epoch_ms"),
            "childWorkflowID": step.get("child_workflow_id"),
        }
        if error is not None:
            item["error"] = str(error)
        found.append(item)
    return found


# --- mutations -------------------------------------------------------------------------------------


def cancel(ops: Ops, key: str, *, actor: str | None, reason: str | None) -> dict[str, Any]:
    """Cancel at the next checkpoint (with children); a run's current phase, children and sandboxes go too."""
    given = require_text(actor=actor, reason=reason)
    reconcile(ops.engine)
    with ops.engine.connect() as conn:
        target = resolve(conn, key)
    if target.run is not None:
        return run_control.cancel_run(ops, target, given["actor"], given["reason"])
    row = target.workflow
    assert row is not None
    with ops.engine.begin() as conn:
        status = dbos_control.status_for_update(conn, row.workflow_id)
        if status not in CANCELLABLE:
            raise Conflict(f"cannot cancel workflow in status {status}", status=status)
        changed = dbos_control.cancel(conn, [row.workflow_id])
        faults.hit("ops.between_change_and_audit")
        audit(
            conn,
            target,
            "cancel",
            row.workflow_id,
            given["actor"],
            given["reason"],
            previousStatus=status,
            canceledWorkflowIDs=changed,
        )
    return {"accepted": True, "workflowID": row.workflow_id}


def resume(ops: Ops, key: str, *, actor: str | None, reason: str | None) -> dict[str, Any]:
    """Resume from the last checkpoint (same id); a cancelled run is reopened as well."""
    given = require_text(actor=actor, reason=reason)
    reconcile(ops.engine)
    with ops.engine.connect() as conn:
        target = resolve(conn, key)
    if target.run is not None and target.run.status == "canceled":
        return run_control.resume_run(ops, target, given["actor"], given["reason"])
    row = target.workflow
    if target.run is not None:
        with ops.engine.connect() as conn:
            row = dbos_workflows.get(conn, target.run.current_workflow_id or target.run.workflow_id)
        if row is None or row.status != "ENQUEUED":
            raise Conflict(f"cannot resume run in status {target.run.status}", status=target.run.status)
    assert row is not None
    with ops.engine.begin() as conn:
        status = dbos_control.status_for_update(conn, row.workflow_id)
        if status not in RESUMABLE:
            raise Conflict(f"cannot resume workflow in status {status}", status=status)
        dbos_control.resume(conn, row.workflow_id, queue_name=run_control.INTERNAL_QUEUE)
        faults.hit("ops.between_change_and_audit")
        audit(
            conn,
            target,
            "resume",
            row.workflow_id,
            given["actor"],
            given["reason"],
            previousStatus=status,
            resumedWorkflowIDs=[row.workflow_id],
        )
    return {"accepted": True, "workflowID": row.workflow_id}


def fork(
    ops: Ops, key: str, *, step_n: int, app_version: str | None, actor: str | None, reason: str | None
) -> dict[str, Any]:
    """A new workflow (new id) that reuses the checkpoints of steps before ``step_n`` and runs the rest."""
    given = require_text(actor=actor, reason=reason)
    reconcile(ops.engine)
    target, row = _dbos_id(ops, key)
    with ops.engine.connect() as conn:
        last = dbos_workflows.max_step(conn, row.workflow_id)
    if step_n < 1 or step_n > last:
        raise Conflict(f"fork stepN {step_n} exceeds max step {last}", maxStep=last)
    version = app_version or ops.settings.app_version
    forked = str(uuid.uuid4())
    payload = audit_payload(
        target,
        "fork",
        row.workflow_id,
        given["actor"],
        given["reason"],
        forkedWorkflowID=forked,
        stepN=step_n,
        appVersion=version,
    )
    with ops.engine.begin() as conn:
        ops_intents.add(
            conn, forked_workflow_id=forked, anchor=target.anchor, target_workflow_id=row.workflow_id, payload=payload
        )
    try:
        with SetWorkflowID(forked):
            ops.client.fork_workflow(row.workflow_id, step_n, application_version=version)
    except dbos_errors.DBOSException as error:
        with ops.engine.begin() as conn:  # DBOS refused: nothing was forked, so nothing stays written
            ops_intents.remove(conn, forked)
        raise Conflict(f"cannot fork workflow {row.workflow_id}: {error}") from error
    faults.hit("ops.between_change_and_audit")
    with ops.engine.begin() as conn:
        _finish_fork(conn, ops_intents.pending_for_update(conn, forked))
    return {"accepted": True, "workflowID": row.workflow_id, "forkedWorkflowID": forked}


def _finish_fork(conn: sa.Connection, intents: list[ops_intents.OpsIntent], *, grace: timedelta | None = None) -> int:
    """Audit each pending fork whose workflow exists; with ``grace``, abandon those older than it whose workflow
    never appeared. Returns how many were audited."""
    audited = 0
    for intent in intents:
        if dbos_workflows.get(conn, intent.forked_workflow_id) is not None:
            ops_audit.add(conn, intent.anchor, intent.payload)
            ops_intents.finish(conn, intent.forked_workflow_id, "done")
            audited += 1
        elif grace is not None and intent.created_at < datetime.now(UTC) - grace:
            ops_intents.finish(conn, intent.forked_workflow_id, "abandoned")
    return audited


def reconcile(engine: sa.Engine, *, grace: timedelta = FORK_GRACE) -> int:
    """Finish what a crash left between a fork and its audit row; returns how many audit rows it wrote.
    Run at the start of every ops mutation and in each round of the recovery leader."""
    with engine.begin() as conn:
        return _finish_fork(conn, ops_intents.pending_for_update(conn), grace=grace)
