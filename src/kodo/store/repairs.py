"""``app.repairs``: one row per retry of a failed run, each with its own repair workflow id."""

from __future__ import annotations

import sqlalchemy as sa


def next_attempt(conn: sa.Connection, run_id: str) -> int:
    value = conn.execute(
        sa.text("SELECT coalesce(max(attempt), 0) FROM app.repairs WHERE run_id = :r"), {"r": run_id}
    ).scalar_one()
    return int(value) + 1


def record(
    conn: sa.Connection, *, run_id: str, attempt: int, workflow_id: str, from_step: str, requested_by: str | None
) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO app.repairs (run_id, attempt, workflow_id, from_step, requested_by) "
            "VALUES (:r, :a, :w, :f, :b)"
        ),
        {"r": run_id, "a": attempt, "w": workflow_id, "f": from_step, "b": requested_by},
    )
