"""``app.eval_results``: one row per (run, eval check), written once with the run's ExecuteST checkpoint."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from kodo.errors import Conflict
from kodo.identity import canonical
from kodo.store import to_json
from kodo.store.statements import sql


def record(
    conn: sa.Connection, *, run_id: str, check_id: str, kind: str, passed: bool, reason: str, payload: dict[str, Any]
) -> bool:
    """Insert a check's result; an identical re-write is a no-op, a different one a divergence."""
    row = conn.execute(
        sql(
            "INSERT INTO app.eval_results (run_id, check_id, kind, pass, reason, payload) VALUES "
            "(:r, :c, :k, :p, :reason, CAST(:payload AS jsonb)) ON CONFLICT DO NOTHING RETURNING run_id"
        ),
        {"r": run_id, "c": check_id, "k": kind, "p": passed, "reason": reason, "payload": to_json(payload)},
    ).first()
    if row is not None:
        return True
    existing = conn.execute(
        sql("SELECT pass AS passed, reason, payload FROM app.eval_results WHERE run_id = :r AND check_id = :c"),
        {"r": run_id, "c": check_id},
    ).one()
    if existing.passed != passed or existing.reason != reason or canonical(existing.payload) != canonical(payload):
        raise Conflict(f"eval result divergence for {run_id} check {check_id}")
    return False


def list_for_run(conn: sa.Connection, run_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        sql(
            "SELECT check_id, kind, pass AS passed, reason, payload, created_at FROM app.eval_results "
            "WHERE run_id = :r ORDER BY check_id"
        ),
        {"r": run_id},
    )
    return [
        {
            "checkId": row.check_id,
            "kind": row.kind,
            "pass": row.passed,
            "reason": row.reason,
            "payload": row.payload,
            "createdAt": int(row.created_at.timestamp() * 1000),
        }
        for row in rows
    ]


def summary(conn: sa.Connection, run_id: str) -> dict[str, int] | None:
    """``{total, passed, failed}`` for a run with eval results, else None."""
    row = conn.execute(
        sql("SELECT count(*) AS total, count(*) FILTER (WHERE pass) AS passed FROM app.eval_results WHERE run_id = :r"),
        {"r": run_id},
    ).one()
    if not row.total:
        return None
    return {"total": int(row.total), "passed": int(row.passed), "failed": int(row.total - row.passed)}
