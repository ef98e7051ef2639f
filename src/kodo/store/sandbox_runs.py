"""``app.sbx_runs``: one row per sandbox attempt of a fan-out task."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from kodo.store import to_json
from kodo.store.statements import sql


def record(
    conn: sa.Connection,
    *,
    run_id: str,
    task_key: str,
    attempt: int,
    provider: str,
    request: dict[str, Any],
    response: dict[str, Any],
) -> bool:
    """Insert the attempt's row; the first write of an attempt wins (a replayed attempt writes nothing)."""
    row = conn.execute(
        sql(
            "INSERT INTO app.sbx_runs (run_id, step_id, task_key, attempt, provider, request, response, err_code, "
            "metrics) VALUES (:r, 'ExecuteST', :t, :a, :p, CAST(:req AS jsonb), CAST(:res AS jsonb), :e, "
            "CAST(:m AS jsonb)) ON CONFLICT DO NOTHING RETURNING run_id"
        ),
        {
            "r": run_id,
            "t": task_key,
            "a": attempt,
            "p": provider,
            "req": to_json(request),
            "res": to_json(response),
            "e": response.get("errCode", "NONE"),
            "m": to_json(response.get("metrics")),
        },
    ).first()
    return row is not None


def list_for_run(conn: sa.Connection, run_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        sql(
            "SELECT task_key, attempt, provider, err_code, response FROM app.sbx_runs WHERE run_id = :r "
            "ORDER BY task_key, attempt"
        ),
        {"r": run_id},
    )
    return [dict(row._mapping) for row in rows]
