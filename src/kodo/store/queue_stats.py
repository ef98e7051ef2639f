"""Queue depth, partition fairness, priority latency and throughput, read from ``dbos.workflow_status``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from kodo.store import queue_counts
from kodo.store.statements import sql

_NOW_MS = "CAST(extract(epoch FROM clock_timestamp()) * 1000 AS bigint)"
# Workflows waiting in or running from a queue. Written as two halves so that each one matches one of
# DBOS's partial indexes (in-flight: ENQUEUED/PENDING; DELAYED): no scan of the whole history.
WAITING_WORKFLOWS = (
    "(SELECT queue_name, queue_partition_key, status, created_at FROM dbos.workflow_status "
    "WHERE status IN ('ENQUEUED', 'PENDING') UNION ALL "
    "SELECT queue_name, queue_partition_key, status, created_at FROM dbos.workflow_status "
    "WHERE status = 'DELAYED') AS waiting"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DepthRow:
    queue_name: str
    status: str
    workflow_count: int
    oldest_created_at: int | None
    newest_created_at: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FairnessRow:
    queue_name: str
    partition_key: str | None
    status: str
    workflow_count: int
    oldest_created_at: int | None
    newest_created_at: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PriorityRow:
    queue_name: str
    priority: int
    status: str
    workflow_count: int
    avg_latency_ms: float | None  # created → dequeued (started), for rows that started


@dataclass(frozen=True, slots=True, kw_only=True)
class CompletionRow:
    name: str
    status: str
    count: int
    p50_ms: float | None
    p95_ms: float | None


def depth(conn: sa.Connection, *, queue: str | None, status: str | None, limit: int) -> list[DepthRow]:
    """Workflows waiting in (or running from) each queue, by status: the counts ``kodo.store.queue_counts``
    keeps (no count over the waiting workflows: parked runs' DELAYED continuations are many), and the oldest
    and newest of each through an index (for DELAYED, an index probe each; in flight, the queue's in-flight rows)."""
    out = []
    for row in queue_counts.counts(conn, queue=queue, status=status)[:limit]:
        if row.status not in queue_counts.WAITING:  # the trigger counts no other; the status is in the SQL text
            continue
        edges = conn.execute(
            sql(
                "SELECT min(created_at) AS oldest_created_at, max(created_at) AS newest_created_at "
                f"FROM dbos.workflow_status WHERE queue_name = :q AND status = '{row.status}'"
            ),
            {"q": row.queue_name},
        ).one()
        out.append(
            DepthRow(
                queue_name=row.queue_name,
                status=row.status,
                workflow_count=row.workflow_count,
                oldest_created_at=edges.oldest_created_at,
                newest_created_at=edges.newest_created_at,
            )
        )
    return out


def fairness(conn: sa.Connection, *, queue: str | None, limit: int) -> list[FairnessRow]:
    """Per partition: how many workflows wait or run, and since when (starvation shows as an old oldest)."""
    rows = conn.execute(
        sql(
            "SELECT queue_name, queue_partition_key AS partition_key, status, count(*) AS workflow_count, "
            "min(created_at) AS oldest_created_at, max(created_at) AS newest_created_at "
            f"FROM {WAITING_WORKFLOWS} WHERE queue_name IS NOT NULL "
            "AND (CAST(:q AS text) IS NULL OR queue_name = :q) "
            "GROUP BY queue_name, queue_partition_key, status ORDER BY queue_name, queue_partition_key, status "
            "LIMIT :n"
        ),
        {"q": queue, "n": limit},
    )
    return [FairnessRow(**dict(row._mapping)) for row in rows]


def priority(conn: sa.Connection, *, queue: str | None, window_s: int, limit: int) -> list[PriorityRow]:
    """Per priority: counts and the mean wait from enqueue to dequeue over the window."""
    rows = conn.execute(
        sql(
            "SELECT queue_name, coalesce(priority, 0) AS priority, status, count(*) AS workflow_count, "
            "CAST(avg(started_at_epoch_ms - created_at) FILTER (WHERE started_at_epoch_ms IS NOT NULL) AS float) "
            "AS avg_latency_ms FROM dbos.workflow_status WHERE queue_name IS NOT NULL "
            f"AND created_at >= {_NOW_MS} - :window_ms AND (CAST(:q AS text) IS NULL OR queue_name = :q) "
            "GROUP BY queue_name, coalesce(priority, 0), status ORDER BY queue_name, 2, status LIMIT :n"
        ),
        {"q": queue, "window_ms": window_s * 1000, "n": limit},
    )
    return [PriorityRow(**dict(row._mapping)) for row in rows]


def completions(conn: sa.Connection, *, window_s: int) -> list[CompletionRow]:
    """Workflows that finished within the window, by name and status, with duration percentiles."""
    rows = conn.execute(
        sql(
            "SELECT name, status, count(*) AS count, "
            "CAST(percentile_cont(0.5) WITHIN GROUP (ORDER BY completed_at - created_at) AS float) AS p50_ms, "
            "CAST(percentile_cont(0.95) WITHIN GROUP (ORDER BY completed_at - created_at) AS float) AS p95_ms "
            "FROM dbos.workflow_status WHERE completed_at IS NOT NULL "
            f"AND completed_at >= {_NOW_MS} - :window_ms "
            "AND status IN ('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED') "
            "GROUP BY name, status ORDER BY name, status"
        ),
        {"window_ms": window_s * 1000},
    )
    return [CompletionRow(**dict(row._mapping)) for row in rows]


def run_statuses(conn: sa.Connection) -> dict[str, int]:
    """How many app runs are in each status."""
    rows = conn.execute(sql("SELECT status, count(*) FROM app.runs GROUP BY status ORDER BY status"))
    return {str(status): int(count) for status, count in rows}


def failures(conn: sa.Connection, *, window_s: int, limit: int) -> list[dict[str, Any]]:
    """Workflows that failed (ERROR or out of recovery attempts) within the window, newest first."""
    rows = conn.execute(
        sql(
            "SELECT workflow_uuid AS workflow_id, status, name, application_version AS app_version, created_at, "
            "updated_at, recovery_attempts FROM dbos.workflow_status "
            "WHERE status IN ('ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED') "
            f"AND created_at >= {_NOW_MS} - :window_ms ORDER BY created_at DESC LIMIT :n"
        ),
        {"window_ms": window_s * 1000, "n": limit},
    )
    return [dict(row._mapping) for row in rows]


def slow_steps(conn: sa.Connection, *, min_ms: int, limit: int) -> list[dict[str, Any]]:
    """Checkpointed operations that took longer than ``min_ms``, slowest first."""
    rows = conn.execute(
        sql(
            "SELECT workflow_uuid AS workflow_id, function_id, function_name, started_at_epoch_ms, "
            "completed_at_epoch_ms, completed_at_epoch_ms - started_at_epoch_ms AS duration_ms, "
            "error IS NOT NULL AS failed FROM dbos.operation_outputs "
            "WHERE completed_at_epoch_ms - started_at_epoch_ms > :min ORDER BY duration_ms DESC LIMIT :n"
        ),
        {"min": min_ms, "n": limit},
    )
    return [dict(row._mapping) for row in rows]
