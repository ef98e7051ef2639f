"""What budget checks read: the run's active wall clock (Postgres time) and its BUDGET artifacts."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from kodo.store.statements import sql


def generation_start_workflow(conn: sa.Connection, run_id: str, workflow_id: str, generation: int) -> str:
    """The workflow that began this generation: the run's own, or the repair that started it."""
    if generation <= 1:
        return workflow_id
    found = conn.execute(
        sql("SELECT workflow_id FROM app.repairs WHERE run_id = :r AND attempt = :a"),
        {"r": run_id, "a": generation - 1},
    ).scalar()
    return str(found) if found else workflow_id


def active_ms(conn: sa.Connection, *, run_id: str, workflow_id: str, generation: int) -> int:
    """Milliseconds this generation has been active: since its first dequeue, minus time parked at gates.

    Uses the database clock (``clock_timestamp()``); called from a datasource transaction, whose output
    DBOS checkpoints, so a replayed workflow sees the same number.
    """
    first = generation_start_workflow(conn, run_id, workflow_id, generation)
    row = conn.execute(
        sql(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms, "
            "coalesce(started_at_epoch_ms, created_at) AS t0 FROM dbos.workflow_status WHERE workflow_uuid = :w"
        ),
        {"w": first},
    ).first()
    if row is None:
        return 0
    parked = conn.execute(
        sql(
            "SELECT coalesce(sum(extract(epoch FROM (resolved_at - created_at)) * 1000), 0)::bigint "
            "FROM app.human_gates WHERE run_id = :r AND generation = :g AND resolved_at IS NOT NULL"
        ),
        {"r": run_id, "g": generation},
    ).scalar_one()
    return max(0, int(row.now_ms) - int(row.t0) - int(parked))


def latest_violation(conn: sa.Connection, run_id: str) -> dict[str, Any] | None:
    """The inline body of the run's newest BUDGET artifact, if any."""
    inline = conn.execute(
        sql(
            "SELECT inline FROM app.artifacts WHERE run_id = :r AND step_id = 'BUDGET' "
            "ORDER BY attempt DESC, created_at DESC LIMIT 1"
        ),
        {"r": run_id},
    ).scalar()
    return dict(inline) if isinstance(inline, dict) else None
