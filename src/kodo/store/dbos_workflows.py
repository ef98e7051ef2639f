"""Read models over DBOS's ``dbos.workflow_status`` for the ops plane (lists, children, queue position).

Only reads, except ``redelay`` (see its docstring). Rows come back as ``WorkflowRow``; times are epoch ms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from kodo.store.statements import sql

ACTIVE = ("ENQUEUED", "PENDING", "DELAYED")
STATUSES = ("ENQUEUED", "DELAYED", "PENDING", "SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
# Utility and scheduled workflows, hidden from ops lists on request (``hideInternal``).
INTERNAL_NAMES = ("ScheduledTick", "SleepWorkflow", "DeliverWebhook", "WebhookRetention")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowRow:
    workflow_id: str
    status: str
    name: str | None
    class_name: str | None
    queue_name: str | None
    partition_key: str | None
    priority: int | None
    app_version: str | None
    executor_id: str | None
    created_at: int | None
    updated_at: int | None
    started_at: int | None
    recovery_attempts: int | None
    parent_workflow_id: str | None
    forked_from: str | None
    schedule_name: str | None
    delay_until: int | None
    run_id: str | None = None
    run_status: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    """A selection of workflows: every given criterion must hold (lists are OR-ed within)."""

    ids: Sequence[str] = ()
    statuses: Sequence[str] = ()
    run_statuses: Sequence[str] = ()
    names: Sequence[str] = ()
    queues: Sequence[str] = ()
    partitions: Sequence[str] = ()
    partition_like: Sequence[str] | None = None  # LIKE patterns (a token's tenant); None: no restriction
    tenants: Sequence[str] = ()
    lanes: Sequence[str] = ()
    app_versions: Sequence[str] = ()
    older_than_s: float | None = None
    hide_internal: bool = False
    runs_only: bool = False
    limit: int = 20
    oldest_first: bool = False


_COLUMNS = (
    "ws.workflow_uuid AS workflow_id, ws.status, ws.name, ws.class_name, ws.queue_name, "
    "ws.queue_partition_key AS partition_key, ws.priority, ws.application_version AS app_version, ws.executor_id, "
    "ws.created_at, ws.updated_at, ws.started_at_epoch_ms AS started_at, ws.recovery_attempts, "
    "ws.parent_workflow_id, ws.forked_from, ws.schedule_name, ws.delay_until_epoch_ms AS delay_until"
)
# A run's row joins the workflow responsible for it now (its current phase, or its own id before it began).
_RUN_JOIN = "LEFT JOIN app.runs r ON coalesce(r.current_workflow_id, r.workflow_id) = ws.workflow_uuid"


def _row(row: sa.Row[Any]) -> WorkflowRow:
    return WorkflowRow(**dict(row._mapping))


def get(conn: sa.Connection, workflow_id: str) -> WorkflowRow | None:
    row = conn.execute(
        sql(
            f"SELECT {_COLUMNS}, r.id AS run_id, r.status AS run_status FROM dbos.workflow_status ws {_RUN_JOIN} "
            "WHERE ws.workflow_uuid = :w LIMIT 1"
        ),
        {"w": workflow_id},
    ).first()
    return None if row is None else _row(row)


def select(conn: sa.Connection, where: Filter) -> list[WorkflowRow]:
    """Workflows matching ``where``: newest first (createdAt DESC, workflowID ASC) unless ``oldest_first``."""
    clauses: list[str] = []
    params: dict[str, Any] = {"limit": where.limit}

    def any_of(column: str, name: str, values: Sequence[str]) -> None:
        if len(values) == 1:  # plain equality: an index on (column, created_at) then also gives the order
            clauses.append(f"{column} = :{name}")
            params[name] = values[0]
        elif values:
            clauses.append(f"{column} = ANY(:{name})")
            params[name] = list(values)

    any_of("ws.workflow_uuid", "ids", where.ids)
    any_of("ws.status", "statuses", where.statuses)
    any_of("r.status", "run_statuses", where.run_statuses)
    any_of("ws.name", "names", where.names)
    any_of("ws.queue_name", "queues", where.queues)
    any_of("ws.queue_partition_key", "partitions", where.partitions)
    any_of("r.tenant_id", "tenants", where.tenants)
    if where.partitions:  # the predicate of kodo's partition index (kodo.store.dbos_indexes); always true
        clauses.append("ws.created_at > 0")
    if where.partition_like is not None:
        clauses.append("ws.queue_partition_key LIKE ANY(:partition_like)")
        params["partition_like"] = list(where.partition_like)
    any_of("coalesce(r.options->>'lane', 'interactive')", "lanes", where.lanes)
    any_of("ws.application_version", "versions", where.app_versions)
    if where.older_than_s is not None:
        clauses.append("ws.created_at < CAST(extract(epoch FROM clock_timestamp()) * 1000 AS bigint) - :age_ms")
        params["age_ms"] = int(where.older_than_s * 1000)
    if where.hide_internal:
        clauses.append("ws.schedule_name IS NULL AND NOT (ws.name = ANY(:internal))")
        params["internal"] = list(INTERNAL_NAMES)
    if where.runs_only or where.run_statuses or where.tenants or where.lanes:
        clauses.append("r.id IS NOT NULL")
    condition = " AND ".join(clauses) or "TRUE"
    order = "ws.created_at ASC, ws.workflow_uuid ASC" if where.oldest_first else "ws.created_at DESC, ws.workflow_uuid"
    rows = conn.execute(
        sql(
            f"SELECT {_COLUMNS}, r.id AS run_id, r.status AS run_status FROM dbos.workflow_status ws {_RUN_JOIN} "
            f"WHERE {condition} ORDER BY {order} LIMIT :limit"
        ),
        params,
    )
    return [_row(row) for row in rows]


def children(conn: sa.Connection, parent_id: str) -> list[WorkflowRow]:
    """The direct children of a workflow (DBOS's ``parent_workflow_id``), oldest first."""
    rows = conn.execute(
        sql(
            f"SELECT {_COLUMNS} FROM dbos.workflow_status ws WHERE ws.parent_workflow_id = :p "
            "ORDER BY ws.created_at, ws.workflow_uuid"
        ),
        {"p": parent_id},
    )
    return [_row(row) for row in rows]


def pending_of(conn: sa.Connection, executor_ids: Sequence[str], limit: int = 500) -> list[WorkflowRow]:
    """PENDING workflows owned by the given executors, oldest first."""
    if not executor_ids:
        return []
    rows = conn.execute(
        sql(
            f"SELECT {_COLUMNS} FROM dbos.workflow_status ws WHERE ws.status = 'PENDING' "
            "AND ws.executor_id = ANY(:e) ORDER BY ws.created_at, ws.workflow_uuid LIMIT :n"
        ),
        {"e": list(executor_ids), "n": limit},
    )
    return [_row(row) for row in rows]


def unserved(conn: sa.Connection, live_versions: Sequence[str], limit: int = 200) -> list[WorkflowRow]:
    """Queued or running workflows whose application version no live executor serves."""
    rows = conn.execute(
        sql(
            f"SELECT {_COLUMNS} FROM dbos.workflow_status ws WHERE ws.status IN ('ENQUEUED', 'PENDING') "
            "AND ws.application_version IS NOT NULL AND NOT (ws.application_version = ANY(:v)) "
            "ORDER BY ws.created_at, ws.workflow_uuid LIMIT :n"
        ),
        {"v": list(live_versions), "n": limit},
    )
    return [_row(row) for row in rows]


def position(conn: sa.Connection, row: WorkflowRow) -> tuple[int, int]:
    """(running, queued ahead) in the row's queue and partition: what stands between it and a slot."""
    result = conn.execute(
        sql(
            "SELECT count(*) FILTER (WHERE status = 'PENDING') AS running, "
            "count(*) FILTER (WHERE status = 'ENQUEUED' AND (coalesce(priority, 0) < :prio "
            "OR (coalesce(priority, 0) = :prio AND (created_at, workflow_uuid) < (:created, :w)))) AS ahead "
            "FROM dbos.workflow_status WHERE queue_name = :q "
            "AND queue_partition_key IS NOT DISTINCT FROM :p AND status IN ('ENQUEUED', 'PENDING') "
            "AND workflow_uuid <> :w"
        ),
        {
            "q": row.queue_name,
            "p": row.partition_key,
            "prio": row.priority or 0,
            "created": row.created_at or 0,
            "w": row.workflow_id,
        },
    ).one()
    return int(result.running), int(result.ahead)


def queue(conn: sa.Connection, name: str) -> dict[str, Any] | None:
    """The registered queue ``name`` (its limits), or None when no process registered it."""
    row = conn.execute(sql("SELECT * FROM dbos.queues WHERE name = :n"), {"n": name}).first()
    return None if row is None else dict(row._mapping)


def redelay(conn: sa.Connection, workflow_id: str, *, until_ms: int, queue_name: str) -> bool:
    """Put a CANCELLED, never-started continuation back to DELAYED on its queue until ``until_ms``.

    A write to DBOS's own table (as are ``store.dbos_control``'s): ``resume`` would enqueue a parked run's
    continuation at once (which resolves its open gate as timed out), while the operator who
    resumes a cancelled parked run wants it parked again until the gate's deadline.
    """
    result = conn.execute(
        sql(
            "UPDATE dbos.workflow_status SET status = 'DELAYED', queue_name = :q, delay_until_epoch_ms = :until, "
            "owner_xid = NULL, recovery_attempts = 0, started_at_epoch_ms = NULL, completed_at = NULL, "
            "deduplication_id = NULL, updated_at = CAST(extract(epoch FROM clock_timestamp()) * 1000 AS bigint) "
            "WHERE workflow_uuid = :w AND status = 'CANCELLED' RETURNING workflow_uuid"
        ),
        {"w": workflow_id, "q": queue_name, "until": until_ms},
    ).first()
    return result is not None


def has_steps(conn: sa.Connection, workflow_id: str) -> bool:
    """Whether the workflow has checkpointed any operation (it started at some point)."""
    found = conn.execute(
        sql("SELECT 1 FROM dbos.operation_outputs WHERE workflow_uuid = :w LIMIT 1"), {"w": workflow_id}
    ).first()
    return found is not None


def max_step(conn: sa.Connection, workflow_id: str) -> int:
    value = conn.execute(
        sql("SELECT coalesce(max(function_id), 0) FROM dbos.operation_outputs WHERE workflow_uuid = :w"),
        {"w": workflow_id},
    ).scalar_one()
    return int(value)


@dataclass(frozen=True, slots=True)
class LastStep:
    function_name: str
    completed_at_epoch_ms: int | None


def last_step(conn: sa.Connection, workflow_id: str) -> LastStep | None:
    """The workflow's newest recorded step (DBOS's ``operation_outputs``), or None before its first."""
    row = conn.execute(
        sql(
            "SELECT function_name, completed_at_epoch_ms FROM dbos.operation_outputs WHERE workflow_uuid = :w "
            "ORDER BY function_id DESC LIMIT 1"
        ),
        {"w": workflow_id},
    ).first()
    return None if row is None else LastStep(row.function_name, row.completed_at_epoch_ms)
