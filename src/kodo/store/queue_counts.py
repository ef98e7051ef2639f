"""Queue depth without counting: ``app.queue_counts``, kept by a trigger on ``dbos.workflow_status``.

Every insert, status (or queue) change and delete of a workflow row adds +1/-1 to the count of its
(queue, status) for the waiting statuses (ENQUEUED, PENDING, DELAYED), in the same transaction, so the
counts are exactly what a ``count(*)`` would see at the reader's snapshot. A reader sums a handful of
counter rows instead of reading every waiting workflow: a parked run's ``ResumeRun`` continuation waits
DELAYED until its gate's deadline, so counting them costs O(parked runs).

The row a transaction adds to is its own backend's (``pg_backend_pid()``): two transactions that run at
the same time never update the same counter row, so the trigger adds no lock wait (and no deadlock) to
DBOS's transactions. ``compact`` folds the rows of backends that are gone into one row (``backend = 0``).

The table comes with kodo's migrations (``0015_history.sql``). Like ``kodo.store.completion_trigger``,
the rest is installed after DBOS's migrations (``install``), with a version comment on the trigger; a new
installation counts the waiting workflows once (through DBOS's partial indexes: O(waiting)), under a lock
that holds writers of ``dbos.workflow_status`` off for that moment.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import sqlalchemy as sa

from kodo.store import completion_trigger
from kodo.store.statements import sql

WAITING = ("ENQUEUED", "PENDING", "DELAYED")
TRIGGER = "kodo_queue_counts"
_LOCK_ID = 0x6B6F6471

FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION app.count_queue_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.queue_name IS NOT NULL AND OLD.status IN ('ENQUEUED', 'PENDING', 'DELAYED') THEN
        INSERT INTO app.queue_counts VALUES (OLD.queue_name, OLD.status, pg_backend_pid(), -1)
        ON CONFLICT (queue_name, status, backend)
        DO UPDATE SET workflow_count = app.queue_counts.workflow_count - 1;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.queue_name IS NOT NULL AND NEW.status IN ('ENQUEUED', 'PENDING', 'DELAYED') THEN
        INSERT INTO app.queue_counts VALUES (NEW.queue_name, NEW.status, pg_backend_pid(), 1)
        ON CONFLICT (queue_name, status, backend)
        DO UPDATE SET workflow_count = app.queue_counts.workflow_count + 1;
    END IF;
    RETURN NULL;
END
$$;
"""

_COUNTED = "{row}.queue_name IS NOT NULL AND {row}.status IN ('ENQUEUED', 'PENDING', 'DELAYED')"
TRIGGER_SQL = f"""
CREATE TRIGGER {TRIGGER}_insert AFTER INSERT ON dbos.workflow_status
FOR EACH ROW WHEN ({_COUNTED.format(row="NEW")}) EXECUTE FUNCTION app.count_queue_change();
CREATE TRIGGER {TRIGGER} AFTER UPDATE OF status, queue_name ON dbos.workflow_status
FOR EACH ROW WHEN ((OLD.status IS DISTINCT FROM NEW.status OR OLD.queue_name IS DISTINCT FROM NEW.queue_name)
    AND (({_COUNTED.format(row="OLD")}) OR ({_COUNTED.format(row="NEW")})))
EXECUTE FUNCTION app.count_queue_change();
CREATE TRIGGER {TRIGGER}_delete AFTER DELETE ON dbos.workflow_status
FOR EACH ROW WHEN ({_COUNTED.format(row="OLD")}) EXECUTE FUNCTION app.count_queue_change();
"""

VERSION = "kodo " + hashlib.sha256((FUNCTION_SQL + TRIGGER_SQL).encode()).hexdigest()[:16]

# The waiting workflows counted from DBOS's table itself: each half matches one of its partial indexes.
_RECOUNT = """
INSERT INTO app.queue_counts (queue_name, status, backend, workflow_count)
SELECT queue_name, status, 0, count(*) FROM (
    SELECT queue_name, status FROM dbos.workflow_status WHERE status IN ('ENQUEUED', 'PENDING')
    UNION ALL SELECT queue_name, status FROM dbos.workflow_status WHERE status = 'DELAYED'
) AS waiting WHERE queue_name IS NOT NULL GROUP BY queue_name, status
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueCount:
    queue_name: str
    status: str
    workflow_count: int


def installed_version(conn: sa.Connection) -> str | None:
    return completion_trigger.installed_version(conn, TRIGGER)


def install(conn: sa.Connection) -> bool:
    """Create (or replace) the table, index, function and triggers, and count the waiting workflows afresh,
    in the caller's transaction; returns whether it changed. Needs ``dbos.workflow_status``."""
    if installed_version(conn) == VERSION:
        return False
    conn.execute(sql("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    if installed_version(conn) == VERSION:  # a concurrent installer got there first
        return False
    conn.execute(sql("CREATE SCHEMA IF NOT EXISTS app"))
    conn.exec_driver_sql("LOCK TABLE dbos.workflow_status IN SHARE ROW EXCLUSIVE MODE")
    conn.exec_driver_sql(FUNCTION_SQL)
    for suffix in ("_insert", "", "_delete"):
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TRIGGER}{suffix} ON dbos.workflow_status")
    conn.exec_driver_sql(TRIGGER_SQL)
    conn.exec_driver_sql(f"COMMENT ON TRIGGER {TRIGGER} ON dbos.workflow_status IS '{VERSION}'")
    conn.exec_driver_sql("DELETE FROM app.queue_counts")
    conn.exec_driver_sql(_RECOUNT)
    return True


def compact(conn: sa.Connection) -> int:
    """Fold the counter rows of backends that are gone into ``backend = 0``; returns the rows folded."""
    folded = conn.execute(
        sql(
            "WITH gone AS (DELETE FROM app.queue_counts WHERE backend <> 0 "
            "AND backend NOT IN (SELECT pid FROM pg_stat_activity) RETURNING queue_name, status, workflow_count), "
            "sums AS (SELECT queue_name, status, sum(workflow_count) AS n, count(*) AS folded FROM gone "
            "GROUP BY queue_name, status), "
            "merged AS (INSERT INTO app.queue_counts (queue_name, status, backend, workflow_count) "
            "SELECT queue_name, status, 0, n FROM sums ON CONFLICT (queue_name, status, backend) "
            "DO UPDATE SET workflow_count = app.queue_counts.workflow_count + EXCLUDED.workflow_count) "
            "SELECT coalesce(sum(folded), 0) FROM sums"
        )
    ).scalar_one()
    return int(folded)


def counts(conn: sa.Connection, *, queue: str | None = None, status: str | None = None) -> list[QueueCount]:
    """Waiting workflows per (queue, status) with at least one, ordered by queue and status."""
    rows = conn.execute(
        sql(
            "SELECT queue_name, status, sum(workflow_count) AS workflow_count FROM app.queue_counts "
            "WHERE (CAST(:q AS text) IS NULL OR queue_name = :q) AND (CAST(:s AS text) IS NULL OR status = :s) "
            "GROUP BY queue_name, status HAVING sum(workflow_count) > 0 ORDER BY queue_name, status"
        ),
        {"q": queue, "s": status},
    )
    return [
        QueueCount(queue_name=row.queue_name, status=row.status, workflow_count=int(row.workflow_count)) for row in rows
    ]
