"""Operator writes to ``app.runs``: cancel a live run, reopen a cancelled one (both guarded in SQL)."""

from __future__ import annotations

import sqlalchemy as sa

from kodo.store.statements import sql

_TERMINAL = "('succeeded', 'failed', 'canceled', 'retries_exceeded')"


def cancel(conn: sa.Connection, run_id: str) -> bool:
    """``canceled`` + ``NONE``, only if the run is not already terminal; returns whether it changed."""
    row = conn.execute(
        sql(
            "UPDATE app.runs SET status = 'canceled', next_action = 'NONE', updated_at = clock_timestamp() "
            f"WHERE id = :id AND status NOT IN {_TERMINAL} RETURNING id"
        ),
        {"id": run_id},
    ).first()
    return row is not None


def reopen(conn: sa.Connection, run_id: str, *, status: str, next_action: str | None) -> bool:
    """A cancelled run goes back to a live status (operator resume); returns whether it changed."""
    row = conn.execute(
        sql(
            "UPDATE app.runs SET status = :s, next_action = :na, updated_at = clock_timestamp() "
            "WHERE id = :id AND status = 'canceled' RETURNING id"
        ),
        {"id": run_id, "s": status, "na": next_action},
    ).first()
    return row is not None


def find_by_phase(conn: sa.Connection, workflow_id: str) -> str | None:
    """The run whose current phase workflow is ``workflow_id`` (a continuation or a repair), if any."""
    value = conn.execute(
        sql("SELECT id FROM app.runs WHERE current_workflow_id = :w LIMIT 1"), {"w": workflow_id}
    ).scalar()
    return None if value is None else str(value)
