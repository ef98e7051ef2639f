"""Cancel and resume as SQL on ``dbos.workflow_status``, in the caller's transaction.

DBOS's tables live in kodo's database, so an operator's change, the ``app.runs`` row and the OPS audit
row commit together or not at all (``kodo.ops``). The statements are the ones DBOS 3.4 itself runs
(``SystemDatabase.cancel_workflows`` / ``resume_workflows``): the same columns get the same values, and
a worker notices either at its next checkpoint, as it does for ``DBOSClient.cancel_workflow``.
``tests/integration/test_dbos_control.py`` compares the rows each leaves behind, so a DBOS upgrade that
changes them fails there first.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from kodo.store.statements import sql

INTERNAL_QUEUE = "_dbos_internal_queue"  # where DBOS puts a resumed workflow that names no queue
_NOW_MS = "CAST(extract(epoch FROM now()) * 1000 AS bigint)"
_FINISHED = "('SUCCESS', 'ERROR')"


def cancel(conn: sa.Connection, workflow_ids: Sequence[str], *, cascade: bool = True) -> list[str]:
    """CANCELLED (off its queue), unless already finished; with ``cascade`` their children, level by level,
    too. Returns the ids whose status changed, parents first."""
    changed: list[str] = []
    seen = set(workflow_ids)
    frontier = list(workflow_ids)
    while frontier:
        rows = conn.execute(
            sql(
                "UPDATE dbos.workflow_status SET status = 'CANCELLED', owner_xid = NULL, queue_name = NULL, "
                f"deduplication_id = NULL, started_at_epoch_ms = NULL, updated_at = {_NOW_MS}, "
                f"completed_at = {_NOW_MS} WHERE workflow_uuid = ANY(:ids) AND status NOT IN {_FINISHED} "
                "AND status <> 'CANCELLED' RETURNING workflow_uuid"
            ),
            {"ids": frontier},
        )
        changed.extend(sorted(str(row[0]) for row in rows))
        if not cascade:
            break
        children = conn.execute(
            sql("SELECT workflow_uuid FROM dbos.workflow_status WHERE parent_workflow_id = ANY(:ids)"),
            {"ids": frontier},
        ).scalars()
        frontier = [str(child) for child in children if child not in seen]
        seen.update(frontier)
    return changed


def resume(conn: sa.Connection, workflow_id: str, *, queue_name: str) -> bool:
    """ENQUEUED on ``queue_name`` with its recovery attempts and deadline cleared, unless finished; returns
    whether it changed."""
    row = conn.execute(
        sql(
            "UPDATE dbos.workflow_status SET status = 'ENQUEUED', owner_xid = NULL, queue_name = :q, "
            "recovery_attempts = 0, workflow_deadline_epoch_ms = NULL, deduplication_id = NULL, "
            f"started_at_epoch_ms = NULL, updated_at = {_NOW_MS}, completed_at = NULL "
            f"WHERE workflow_uuid = :w AND status NOT IN {_FINISHED} RETURNING workflow_uuid"
        ),
        {"w": workflow_id, "q": queue_name},
    ).first()
    return row is not None


def status_for_update(conn: sa.Connection, workflow_id: str) -> str | None:
    """The workflow's status, its row locked until the caller's transaction ends (``None``: no such row)."""
    value = conn.execute(
        sql("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = :w FOR UPDATE"),
        {"w": workflow_id},
    ).scalar()
    return None if value is None else str(value)
