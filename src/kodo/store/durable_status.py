"""Read-only views of DBOS's own rows (schema ``dbos``) that the API shows beside ``app.*``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True, slots=True, kw_only=True)
class DurableStatus:
    workflow_id: str
    status: str
    name: str | None
    queue_name: str | None
    application_version: str | None
    executor_id: str | None
    recovery_attempts: int | None
    created_at_ms: int | None
    updated_at_ms: int | None


def get(conn: sa.Connection, workflow_id: str) -> DurableStatus | None:
    row = conn.execute(
        sa.text(
            "SELECT workflow_uuid, status, name, queue_name, application_version, executor_id, recovery_attempts, "
            "created_at, updated_at FROM dbos.workflow_status WHERE workflow_uuid = :w"
        ),
        {"w": workflow_id},
    ).first()
    return None if row is None else _status(row)


def _status(row: sa.Row[Any]) -> DurableStatus:
    return DurableStatus(
        workflow_id=row.workflow_uuid,
        status=row.status,
        name=row.name,
        queue_name=row.queue_name,
        application_version=row.application_version,
        executor_id=row.executor_id,
        recovery_attempts=row.recovery_attempts,
        created_at_ms=row.created_at,
        updated_at_ms=row.updated_at,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunDurability:
    """What a RunHeader reads beside the run row, in one round trip."""

    status: DurableStatus | None  # the phase workflow now responsible for the run
    traceparent: str | None  # the W3C traceparent the run's workflow was started under
    step_trace_id: str | None  # the trace of the run's first traced step


def for_run(conn: sa.Connection, *, current_workflow_id: str, workflow_id: str, run_id: str) -> RunDurability:
    """The current phase's DBOS status, the run's start traceparent and its first traced step, in one query."""
    row = conn.execute(
        sa.text(
            "SELECT w.workflow_uuid, w.status, w.name, w.queue_name, w.application_version, w.executor_id, "
            "w.recovery_attempts, w.created_at, w.updated_at, "
            "(SELECT o.attributes->'dbos.otelContext'->>'traceparent' FROM dbos.workflow_status o "
            " WHERE o.workflow_uuid = :origin) AS traceparent, "
            "(SELECT s.trace_id FROM app.run_steps s WHERE s.run_id = :run AND s.trace_id IS NOT NULL "
            " ORDER BY s.started_at, s.step_id, s.attempt LIMIT 1) AS step_trace_id "
            "FROM (SELECT 1) AS one LEFT JOIN dbos.workflow_status w ON w.workflow_uuid = :current"
        ),
        {"current": current_workflow_id, "origin": workflow_id, "run": run_id},
    ).one()
    return RunDurability(
        status=None if row.workflow_uuid is None else _status(row),
        traceparent=str(row.traceparent) if row.traceparent else None,
        step_trace_id=str(row.step_trace_id) if row.step_trace_id else None,
    )


def step_rows(conn: sa.Connection, workflow_id: str) -> list[dict[str, Any]]:
    """DBOS's checkpoint rows of one workflow (its operation outputs), in step order."""
    rows = conn.execute(
        sa.text(
            "SELECT function_id, function_name, child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, "
            "error IS NOT NULL AS failed FROM dbos.operation_outputs WHERE workflow_uuid = :w ORDER BY function_id"
        ),
        {"w": workflow_id},
    )
    return [dict(row._mapping) for row in rows]


def release_delayed(conn: sa.Connection, workflow_id: str) -> bool:
    """Move a DELAYED workflow to ENQUEUED now, in the caller's transaction; returns whether one moved.

    This is DBOS 3.4's own DELAYED → ENQUEUED transition (its background sweep runs once a second),
    done for one workflow at once, so a reply wakes its parked run within one queue poll.
    """
    moved = conn.execute(
        sa.text(
            "UPDATE dbos.workflow_status SET status = 'ENQUEUED', "
            "delay_until_epoch_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint "
            "WHERE workflow_uuid = :w AND status = 'DELAYED' AND NOT coalesce(is_debounced, false) "
            "RETURNING workflow_uuid"
        ),
        {"w": workflow_id},
    ).first()
    return moved is not None


def traceparent(conn: sa.Connection, workflow_id: str) -> str | None:
    """The W3C ``traceparent`` a workflow was started under (DBOS keeps it in its attributes), if any."""
    value = conn.execute(
        sa.text(
            "SELECT attributes->'dbos.otelContext'->>'traceparent' FROM dbos.workflow_status WHERE workflow_uuid = :w"
        ),
        {"w": workflow_id},
    ).scalar()
    return str(value) if value else None
