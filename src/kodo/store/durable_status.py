"""Read-only views of DBOS's own rows (schema ``dbos``) that the API shows beside ``app.*``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from kodo.models import Run
from kodo.store import runs, spend
from kodo.store.async_connections import AsyncConnections
from kodo.store.statements import Columns, pyformat, sql


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


_STATUS_COLUMNS = (
    "workflow_uuid",
    "status",
    "name",
    "queue_name",
    "application_version",
    "executor_id",
    "recovery_attempts",
    "created_at",
    "updated_at",
)


def get(conn: sa.Connection, workflow_id: str) -> DurableStatus | None:
    row = conn.execute(
        sql(f"SELECT {', '.join(_STATUS_COLUMNS)} FROM dbos.workflow_status WHERE workflow_uuid = :w"),
        {"w": workflow_id},
    ).first()
    return None if row is None else _status(row)


def _status(row: Columns, prefix: str = "") -> DurableStatus:
    """A DurableStatus from a row whose ``dbos.workflow_status`` columns carry ``prefix``."""
    columns = row._mapping
    return DurableStatus(
        workflow_id=columns[f"{prefix}workflow_uuid"],
        status=columns[f"{prefix}status"],
        name=columns[f"{prefix}name"],
        queue_name=columns[f"{prefix}queue_name"],
        application_version=columns[f"{prefix}application_version"],
        executor_id=columns[f"{prefix}executor_id"],
        recovery_attempts=columns[f"{prefix}recovery_attempts"],
        created_at_ms=columns[f"{prefix}created_at"],
        updated_at_ms=columns[f"{prefix}updated_at"],
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunDurability:
    """What a RunHeader reads beside the run row, in one round trip."""

    status: DurableStatus | None  # the phase workflow now responsible for the run
    traceparent: str | None  # the W3C traceparent the run's workflow was started under
    step_trace_id: str | None  # the trace of the run's first traced step
    spend: spend.RunSpend | None = None  # the run's spend, when read with the run (``run_with_durability``)


# DBOS's columns of the current phase (prefixed ``w_``), the start traceparent and the first traced step.
_FACTS = (
    ", ".join(f"w.{column} AS w_{column}" for column in _STATUS_COLUMNS)
    + ", (SELECT o.attributes->'dbos.otelContext'->>'traceparent' FROM dbos.workflow_status o "
    " WHERE o.workflow_uuid = {origin}) AS traceparent, "
    "(SELECT s.trace_id FROM app.run_steps s WHERE s.run_id = {run} AND s.trace_id IS NOT NULL "
    " ORDER BY s.started_at, s.step_id, s.attempt LIMIT 1) AS step_trace_id"
)


def _durability(row: Columns, spent: spend.RunSpend | None = None) -> RunDurability:
    return RunDurability(
        spend=spent,
        status=None if row.w_workflow_uuid is None else _status(row, "w_"),
        traceparent=str(row.traceparent) if row.traceparent else None,
        step_trace_id=str(row.step_trace_id) if row.step_trace_id else None,
    )


def for_run(conn: sa.Connection, *, current_workflow_id: str, workflow_id: str, run_id: str) -> RunDurability:
    """The current phase's DBOS status, the run's start traceparent and its first traced step, in one query."""
    facts = _FACTS.format(origin=":origin", run=":run")
    row = conn.execute(
        sql(f"SELECT {facts} FROM (SELECT 1) AS one LEFT JOIN dbos.workflow_status w ON w.workflow_uuid = :current"),
        {"current": current_workflow_id, "origin": workflow_id, "run": run_id},
    ).one()
    return _durability(row)


# The run (dual lookup, as ``runs.get``), the current phase's DBOS status, its start and step traces and its spend.
_RUN_WITH_DURABILITY = (
    f"SELECT r.*, {_FACTS.format(origin='r.workflow_id', run='r.id')}, {spend.RUN_SPEND_COLUMNS} "
    f"FROM ({runs.DUAL_LOOKUP}) AS r "
    "LEFT JOIN dbos.workflow_status w ON w.workflow_uuid = coalesce(r.current_workflow_id, r.workflow_id) "
    f"CROSS JOIN {spend.RUN_SPEND_FROM.format(run='r.id')}"
)


def _run_and_durability(row: Columns | None) -> tuple[Run, RunDurability] | None:
    return None if row is None else (runs.from_row(row), _durability(row, spend.spend_of(row)))


def run_with_durability(conn: sa.Connection, run_or_workflow_id: str) -> tuple[Run, RunDurability] | None:
    """A run (dual lookup, as ``runs.get``) and what its header reads beside it (as ``for_run``, and its
    spend), in one statement: the read a polling client repeats most."""
    return _run_and_durability(conn.execute(sql(_RUN_WITH_DURABILITY), {"key": run_or_workflow_id}).first())


async def fetch_run_with_durability(
    connections: AsyncConnections, run_or_workflow_id: str
) -> tuple[Run, RunDurability] | None:
    """``run_with_durability``, the same statement, on an asyncio connection (the API's event loop)."""
    row = await connections.fetch_one(pyformat(_RUN_WITH_DURABILITY), {"key": run_or_workflow_id})
    return _run_and_durability(row)


def step_rows(conn: sa.Connection, workflow_id: str) -> list[dict[str, Any]]:
    """DBOS's checkpoint rows of one workflow (its operation outputs), in step order."""
    rows = conn.execute(
        sql(
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
        sql(
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
        sql("SELECT attributes->'dbos.otelContext'->>'traceparent' FROM dbos.workflow_status WHERE workflow_uuid = :w"),
        {"w": workflow_id},
    ).scalar()
    return str(value) if value else None


def cancelled_among(conn: sa.Connection, workflow_ids: list[str]) -> list[str]:
    """Which of these workflows are CANCELLED (an operator's cancel, seen by a running task's watch)."""
    found = conn.execute(
        sql("SELECT workflow_uuid FROM dbos.workflow_status WHERE workflow_uuid = ANY(:ids) AND status = 'CANCELLED'"),
        {"ids": workflow_ids},
    ).scalars()
    return list(found)
