"""``app.run_steps``: one row per product step attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kodo.errors import Conflict
from kodo.identity import canonical
from kodo.models import StepRecord
from kodo.store import to_json
from kodo.store.statements import sql


def _row_to_step(row: sa.Row[Any]) -> StepRecord:
    return StepRecord(
        run_id=row.run_id,
        step_id=row.step_id,
        attempt=row.attempt,
        phase=row.phase,
        output=row.output,
        started_at=row.started_at,
        finished_at=row.finished_at,
        trace_id=row.trace_id,
        span_id=row.span_id,
    )


def record(
    conn: sa.Connection,
    *,
    run_id: str,
    step_id: str,
    attempt: int,
    phase: str,
    output: dict[str, Any],
    started_at: datetime,
    trace_id: str | None = None,
    span_id: str | None = None,
) -> None:
    """Append a step attempt. Re-recording the same attempt with different content is a conflict."""
    output = {**output, "attempt": attempt}
    inserted = conn.execute(
        sql(
            "INSERT INTO app.run_steps (run_id, step_id, attempt, phase, output, trace_id, span_id, started_at, "
            "finished_at) VALUES (:run_id, :step_id, :attempt, :phase, CAST(:output AS jsonb), :trace_id, :span_id, "
            ":started_at, clock_timestamp()) ON CONFLICT DO NOTHING RETURNING run_id"
        ),
        {
            "run_id": run_id,
            "step_id": step_id,
            "attempt": attempt,
            "phase": phase,
            "output": to_json(output),
            "trace_id": trace_id,
            "span_id": span_id,
            "started_at": started_at,
        },
    ).first()
    if inserted is None:
        existing = conn.execute(
            sql("SELECT phase, output FROM app.run_steps WHERE run_id=:r AND step_id=:s AND attempt=:a"),
            {"r": run_id, "s": step_id, "a": attempt},
        ).one()
        if existing.phase != phase or canonical(existing.output) != canonical(output):
            raise Conflict(f"determinism violation: {step_id} attempt {attempt} of {run_id} recorded differently")


def list_for_run(conn: sa.Connection, run_id: str, *, limit: int | None = None, offset: int = 0) -> list[StepRecord]:
    """Every attempt (or one page of them), in a stable order: startedAt, then stepId, then attempt."""
    rows = conn.execute(
        sql("SELECT * FROM app.run_steps WHERE run_id = :r ORDER BY started_at, step_id, attempt LIMIT :n OFFSET :o"),
        {"r": run_id, "n": limit, "o": offset},
    )
    return [_row_to_step(row) for row in rows]


def latest_for_run(conn: sa.Connection, run_id: str) -> list[StepRecord]:
    """The latest attempt of each step, ordered by start time."""
    rows = conn.execute(
        sql("SELECT DISTINCT ON (step_id) * FROM app.run_steps WHERE run_id = :r ORDER BY step_id, attempt DESC"),
        {"r": run_id},
    )
    return sorted((_row_to_step(row) for row in rows), key=lambda s: (s.started_at, s.step_id))


def next_attempt(conn: sa.Connection, run_id: str, step_id: str) -> int:
    """1 + the highest recorded attempt of this step."""
    value = conn.execute(
        sql("SELECT coalesce(max(attempt), 0) FROM app.run_steps WHERE run_id = :r AND step_id = :s"),
        {"r": run_id, "s": step_id},
    ).scalar_one()
    return int(value) + 1
