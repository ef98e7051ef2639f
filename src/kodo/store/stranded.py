"""``app.stranded_workflows``: workflows PENDING for a live executor with no thread running them there.

Written by each worker's watchdog for its own executor (``observe``), read by the recovery leader and the
diagnosis view. Times are the database's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kodo.store.statements import sql


@dataclass(frozen=True, slots=True, kw_only=True)
class Stranded:
    workflow_id: str
    executor_id: str
    since: datetime
    recovered_at: datetime | None
    recovered_by: str | None
    age_ms: int


_SELECT = (
    "SELECT workflow_id, executor_id, since, recovered_at, recovered_by, "
    "CAST(extract(epoch FROM clock_timestamp() - since) * 1000 AS bigint) AS age_ms FROM app.stranded_workflows"
)


def _stranded(row: sa.Row[Any]) -> Stranded:
    return Stranded(**dict(row._mapping))


def observe(conn: sa.Connection, executor_id: str, workflow_ids: Sequence[str]) -> list[Stranded]:
    """This executor's stranded set is now ``workflow_ids``: new ones start their clock, the rest are dropped."""
    conn.execute(
        sql("DELETE FROM app.stranded_workflows WHERE executor_id = :e AND NOT (workflow_id = ANY(:w))"),
        {"e": executor_id, "w": list(workflow_ids)},
    )
    if workflow_ids:
        conn.execute(
            sql(
                "INSERT INTO app.stranded_workflows (workflow_id, executor_id) SELECT unnest(CAST(:w AS text[])), :e "
                "ON CONFLICT (workflow_id) DO UPDATE SET seen_at = clock_timestamp(), "
                "since = CASE WHEN app.stranded_workflows.executor_id = EXCLUDED.executor_id "
                "THEN app.stranded_workflows.since ELSE clock_timestamp() END, executor_id = EXCLUDED.executor_id"
            ),
            {"w": list(workflow_ids), "e": executor_id},
        )
    return of_executors(conn, [executor_id])


def of_executors(conn: sa.Connection, executor_ids: Sequence[str]) -> list[Stranded]:
    rows = conn.execute(
        sql(f"{_SELECT} WHERE executor_id = ANY(:e) ORDER BY since, workflow_id"), {"e": list(executor_ids)}
    )
    return [_stranded(row) for row in rows]


def of_workflows(conn: sa.Connection, workflow_ids: Sequence[str]) -> dict[str, Stranded]:
    rows = conn.execute(sql(f"{_SELECT} WHERE workflow_id = ANY(:w)"), {"w": list(workflow_ids)})
    return {row.workflow_id: _stranded(row) for row in rows}


def mark_recovered(conn: sa.Connection, workflow_id: str, by: str) -> None:
    conn.execute(
        sql(
            "UPDATE app.stranded_workflows SET recovered_at = clock_timestamp(), recovered_by = :b "
            "WHERE workflow_id = :w"
        ),
        {"w": workflow_id, "b": by},
    )
