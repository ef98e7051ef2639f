"""``app.marks``: side-effect markers of the crash-demo and slow-step proof workflows."""

from __future__ import annotations

import sqlalchemy as sa

from kodo.store.statements import sql


def add(conn: sa.Connection, run_id: str, step: str) -> None:
    conn.execute(
        sql("INSERT INTO app.marks (run_id, step) VALUES (:r, :s) ON CONFLICT DO NOTHING"),
        {"r": run_id, "s": step},
    )


def counts(conn: sa.Connection, run_id: str) -> dict[str, int]:
    rows = conn.execute(sql("SELECT step, count(*) AS n FROM app.marks WHERE run_id = :r GROUP BY step"), {"r": run_id})
    found = {row.step: int(row.n) for row in rows}
    return {"s1": found.get("s1", 0), "s2": found.get("s2", 0)}
