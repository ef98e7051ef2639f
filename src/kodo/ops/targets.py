"""What an ops id names (a DBOS workflow, an app run, or both), its summary and its OPS audit rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from kodo.errors import NotFound
from kodo.models import Run
from kodo.store import dbos_workflows, ops_audit, runs
from kodo.store import run_control as run_rows
from kodo.store.dbos_workflows import WorkflowRow


@dataclass(frozen=True, slots=True)
class Target:
    """What an id names: a DBOS workflow, an app run, or both."""

    workflow: WorkflowRow | None
    run: Run | None

    @property
    def anchor(self) -> str:
        """Where its audit rows live: the app run when there is one, else the DBOS workflow id."""
        if self.run is not None:
            return self.run.id
        assert self.workflow is not None
        return self.workflow.workflow_id


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def resolve(conn: sa.Connection, key: str) -> Target:
    """Dual lookup; 404 ``workflow not found: <id>`` when neither DBOS nor app.runs knows the id."""
    run = runs.get(conn, key)
    if run is None:
        by_phase = run_rows.find_by_phase(conn, key)
        run = runs.get(conn, by_phase) if by_phase else None
    workflow = dbos_workflows.get(conn, key)
    if workflow is None and run is not None:
        workflow = dbos_workflows.get(conn, run.workflow_id)
    if workflow is None and run is None:
        raise NotFound(f"workflow not found: {key}")
    return Target(workflow, run)


def summary(row: WorkflowRow) -> dict[str, Any]:
    """OpsWorkflowSummary (reference §2.4) plus queue, partition, executor and lineage columns."""
    return {
        "workflowID": row.workflow_id,
        "status": row.status,
        "workflowName": row.name or row.workflow_id,
        "workflowClassName": row.class_name or row.name or row.workflow_id,
        "queueName": row.queue_name,
        "queuePartitionKey": row.partition_key,
        "priority": row.priority,
        "applicationVersion": row.app_version,
        "executorId": row.executor_id,
        "createdAt": row.created_at,
        "updatedAt": row.updated_at,
        "startedAt": row.started_at,
        "recoveryAttempts": row.recovery_attempts,
        "parentWorkflowID": row.parent_workflow_id,
        "forkedFrom": row.forked_from,
        "scheduleName": row.schedule_name,
        "delayUntil": row.delay_until,
        "runId": row.run_id,
        "runStatus": row.run_status,
    }


def audit_rows(conn: sa.Connection, anchors: list[str], limit: int = 100) -> list[dict[str, Any]]:
    """OpsAuditRow[], newest first."""
    rows = []
    for row in ops_audit.list_for(conn, anchors, limit=limit):
        body = dict(row.inline)
        body.setdefault("actor", "system")
        body.setdefault("reason", "-")
        rows.append(body)
    return rows


def audit_payload(target: Target, op: str, workflow_id: str, actor: str, reason: str, **extra: Any) -> dict[str, Any]:
    """An OPS audit row's body."""
    payload: dict[str, Any] = {"op": op, "targetWorkflowID": workflow_id, "at": now_iso(), "actor": actor}
    payload["reason"] = reason
    if target.run is not None:
        payload["runId"] = target.run.id
    payload.update({key: value for key, value in extra.items() if value is not None})
    return payload


def audit(
    conn: sa.Connection, target: Target, op: str, workflow_id: str, actor: str, reason: str, **extra: Any
) -> None:
    ops_audit.add(conn, target.anchor, audit_payload(target, op, workflow_id, actor, reason, **extra))
