"""``app.ops_intents``: an ops change DBOS makes in a transaction of its own (a fork), written ahead.

``pending`` until the change is audited (``done``) or known never to have happened (``abandoned``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kodo.store.statements import sql


@dataclass(frozen=True, slots=True, kw_only=True)
class OpsIntent:
    forked_workflow_id: str
    op: str
    anchor: str
    target_workflow_id: str
    payload: dict[str, Any]
    state: str
    created_at: datetime
    finished_at: datetime | None


def add(
    conn: sa.Connection, *, forked_workflow_id: str, anchor: str, target_workflow_id: str, payload: dict[str, Any]
) -> None:
    conn.execute(
        sql(
            "INSERT INTO app.ops_intents (forked_workflow_id, op, anchor, target_workflow_id, payload) "
            "VALUES (:f, 'fork', :a, :t, CAST(:p AS jsonb))"
        ),
        {"f": forked_workflow_id, "a": anchor, "t": target_workflow_id, "p": json.dumps(payload)},
    )


def pending_for_update(conn: sa.Connection, forked_workflow_id: str | None = None) -> list[OpsIntent]:
    """Pending intents (one, or all), locked until the caller's transaction ends; rows another
    transaction holds are skipped (it is finishing them)."""
    rows = conn.execute(
        sql(
            "SELECT * FROM app.ops_intents WHERE state = 'pending' "
            "AND (CAST(:f AS text) IS NULL OR forked_workflow_id = :f) ORDER BY created_at FOR UPDATE SKIP LOCKED"
        ),
        {"f": forked_workflow_id},
    )
    return [OpsIntent(**dict(row._mapping)) for row in rows]


def finish(conn: sa.Connection, forked_workflow_id: str, state: str) -> None:
    if state not in {"done", "abandoned"}:
        raise ValueError(state)
    conn.execute(
        sql(
            "UPDATE app.ops_intents SET state = :s, finished_at = clock_timestamp() "
            "WHERE forked_workflow_id = :f AND state = 'pending'"
        ),
        {"s": state, "f": forked_workflow_id},
    )


def remove(conn: sa.Connection, forked_workflow_id: str) -> None:
    """Forget a pending intent whose change DBOS refused (it never happened)."""
    conn.execute(
        sql("DELETE FROM app.ops_intents WHERE forked_workflow_id = :f AND state = 'pending'"),
        {"f": forked_workflow_id},
    )
