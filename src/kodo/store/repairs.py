"""``app.repairs``: one row per retry of a failed run, each with its own repair workflow id."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from kodo.store.statements import sql


def next_attempt(conn: sa.Connection, run_id: str) -> int:
    value = conn.execute(
        sql("SELECT coalesce(max(attempt), 0) FROM app.repairs WHERE run_id = :r"), {"r": run_id}
    ).scalar_one()
    return int(value) + 1


def record(
    conn: sa.Connection, *, run_id: str, attempt: int, workflow_id: str, from_step: str, requested_by: str | None
) -> None:
    conn.execute(
        sql(
            "INSERT INTO app.repairs (run_id, attempt, workflow_id, from_step, requested_by) "
            "VALUES (:r, :a, :w, :f, :b)"
        ),
        {"r": run_id, "a": attempt, "w": workflow_id, "f": from_step, "b": requested_by},
    )


@dataclass(frozen=True, slots=True)
class Repair:
    attempt: int
    from_step: str


def latest(conn: sa.Connection, run_id: str) -> Repair | None:
    """The run's newest repair (its attempt number and the step it retries from), or None."""
    row = conn.execute(
        sql("SELECT attempt, from_step FROM app.repairs WHERE run_id = :r ORDER BY attempt DESC LIMIT 1"),
        {"r": run_id},
    ).first()
    return None if row is None else Repair(row.attempt, row.from_step)
