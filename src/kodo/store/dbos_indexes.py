"""Indexes kodo adds to DBOS's ``dbos.workflow_status`` so that its hot reads stay flat as history grows.

DBOS indexes what its queues need (in-flight and DELAYED rows by their own keys, ``created_at``); kodo's
ops plane also selects by partition (the ops list, ``kodo ops … --partition``) and lists DELAYED
workflows (a parked run's continuation) newest first, and queue depth wants the oldest and newest DELAYED
workflow of a queue. Without these, each is a walk over the whole history (``EXPLAIN ANALYZE`` at 100,000
finished and 10,000 parked runs: the partition filter read 22,000 rows of ``created_at`` order to find 20,
the batch selection a sequential scan of 270,000 workflow rows). The two DELAYED indexes are partial: a
row enters them only while it is DELAYED, so DBOS's writes of other rows do not pay for them.

Installed after DBOS's migrations (kodo's numbered migrations run before DBOS creates its tables), each
once (an index that exists is not touched; a missing one is created under an advisory lock).
"""

from __future__ import annotations

import sqlalchemy as sa

from kodo.store.statements import sql

PARTITION_INDEX = "kodo_workflow_status_by_partition"
INDEXES = {
    # The ops list's own order (newest first, then by id) within one partition. Its predicate names created_at,
    # which DBOS's dequeue never does: DBOS lists a queue's partitions with ``min(queue_partition_key)`` under
    # a generic plan (status a parameter, so none of its partial indexes), and an index led by the partition
    # would serve that min by walking every workflow row (a 170 ms dequeue at 270,000 rows, the burst 20 %
    # slower). Kodo's reads add ``created_at > 0`` (always true; not a constraint the planner drops) to use it.
    PARTITION_INDEX: (
        "(queue_partition_key, created_at DESC, workflow_uuid) WHERE queue_partition_key IS NOT NULL AND created_at > 0"
    ),
    "kodo_workflow_status_delayed": "(created_at) WHERE status = 'DELAYED'",
    "kodo_workflow_status_delayed_queue": "(queue_name, created_at) WHERE status = 'DELAYED'",
}


_LOCK_ID = 0x6B6F6469  # one installer at a time across processes


def _missing(conn: sa.Connection) -> list[str]:
    return [
        name for name in INDEXES if conn.execute(sql("SELECT to_regclass(:n)"), {"n": f"dbos.{name}"}).scalar() is None
    ]


def install(conn: sa.Connection) -> list[str]:
    """Create the missing indexes in the caller's transaction; returns the names created now. Processes that
    start together wait for each other (two concurrent ``CREATE INDEX IF NOT EXISTS`` of one name collide)."""
    if not _missing(conn):
        return []
    conn.execute(sql("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    created = _missing(conn)  # again: a concurrent installer may have committed them meanwhile
    for name in created:
        conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON dbos.workflow_status {INDEXES[name]}")
    return created
