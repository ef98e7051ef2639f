"""``app.sbx_executions``: the execution ledger, one row per sandbox execution (see migration 0007).

A row is ``started`` before the command starts; it ends ``finished`` (the command ran to its end),
``reused`` (a re-execution that returned the stored result of an earlier one, named by ``reused_from``)
or ``interrupted`` (its process died, or the command was cancelled, before a result was recorded).
Also ``app.mock_sandbox_results``, the mock sandbox's own idempotency store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kodo.store import to_json
from kodo.store.statements import sql

EXECUTION_STATUSES = ("started", "finished", "interrupted", "reused")


@dataclass(frozen=True, slots=True, kw_only=True)
class Execution:
    execution_id: str
    run_id: str
    task_key: str
    attempt: int
    idempotency_key: str
    provider: str
    executor_id: str
    pid: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    exit: int | None
    err_code: str | None
    reused_from: str | None
    interrupted_by: str | None
    interrupted_at: datetime | None


_COLUMNS = (
    "execution_id, run_id, task_key, attempt, idempotency_key, provider, executor_id, pid, status, started_at, "
    "finished_at, exit, err_code, reused_from, interrupted_by, interrupted_at"
)


def start(
    conn: sa.Connection,
    *,
    execution_id: str,
    run_id: str,
    task_key: str,
    attempt: int,
    idempotency_key: str,
    provider: str,
    executor_id: str,
    pid: int,
) -> None:
    """The execution is about to run its command: a ``started`` row (commit it before the command starts)."""
    conn.execute(
        sql(
            "INSERT INTO app.sbx_executions (execution_id, run_id, task_key, attempt, idempotency_key, provider, "
            "executor_id, pid, status) VALUES (:e, :r, :t, :a, :k, :p, :x, :pid, 'started')"
        ),
        {
            "e": execution_id,
            "r": run_id,
            "t": task_key,
            "a": attempt,
            "k": idempotency_key,
            "p": provider,
            "x": executor_id,
            "pid": pid,
        },
    )


def interrupt_for_task(conn: sa.Connection, task_key: str, *, found_by: str, spare: str | None = None) -> int:
    """Mark the task's ``started`` executions (all but ``spare``) interrupted, found by ``found_by``; how many."""
    result = conn.execute(
        sql(
            "UPDATE app.sbx_executions SET status = 'interrupted', interrupted_by = :f, "
            "interrupted_at = clock_timestamp() WHERE task_key = :t AND status = 'started' "
            "AND execution_id IS DISTINCT FROM :s"
        ),
        {"t": task_key, "f": found_by, "s": spare},
    )
    return int(result.rowcount or 0)


def interrupt_owned(conn: sa.Connection, executor_id: str, *, found_by: str) -> int:
    """At an executor's start: its executions still ``started`` were cut off by its previous life."""
    result = conn.execute(
        sql(
            "UPDATE app.sbx_executions SET status = 'interrupted', interrupted_by = :f, "
            "interrupted_at = clock_timestamp() WHERE executor_id = :x AND status = 'started' "
            "AND started_at < clock_timestamp()"
        ),
        {"x": executor_id, "f": found_by},
    )
    return int(result.rowcount or 0)


def interrupt(conn: sa.Connection, execution_id: str, *, found_by: str) -> None:
    """This execution ends without a result (its command was cancelled)."""
    conn.execute(
        sql(
            "UPDATE app.sbx_executions SET status = 'interrupted', interrupted_by = :f, "
            "interrupted_at = clock_timestamp() WHERE execution_id = :e AND status = 'started'"
        ),
        {"e": execution_id, "f": found_by},
    )


def finish(
    conn: sa.Connection,
    execution_id: str,
    *,
    exit: int,
    err_code: str,
    reused_from: str | None = None,
    finished_at: datetime | None = None,
) -> bool:
    """Complete an execution with its result: ``reused`` when ``reused_from`` names the producer, else
    ``finished``. A producer found ``interrupted`` whose stored result proves it ran to its end is finished
    too (its ``interrupted_by`` stays as the record of who found it). False if nothing was open to complete."""
    result = conn.execute(
        sql(
            "UPDATE app.sbx_executions SET status = CASE WHEN CAST(:from AS text) IS NULL THEN 'finished' "
            "ELSE 'reused' END, finished_at = coalesce(CAST(:at AS timestamptz), clock_timestamp()), "
            "exit = :exit, err_code = :code, reused_from = :from WHERE execution_id = :e "
            "AND status IN ('started', 'interrupted')"
        ),
        {"e": execution_id, "exit": exit, "code": err_code, "from": reused_from, "at": finished_at},
    )
    return bool(result.rowcount)


def get(conn: sa.Connection, execution_id: str) -> Execution | None:
    row = conn.execute(
        sql(f"SELECT {_COLUMNS} FROM app.sbx_executions WHERE execution_id = :e"), {"e": execution_id}
    ).first()
    return Execution(**dict(row._mapping)) if row is not None else None


def list_for_run(conn: sa.Connection, run_id: str, *, limit: int = 1000, offset: int = 0) -> list[Execution]:
    """The run's executions in the order they started."""
    rows = conn.execute(
        sql(
            f"SELECT {_COLUMNS} FROM app.sbx_executions WHERE run_id = :r ORDER BY started_at, execution_id "
            "LIMIT :l OFFSET :o"
        ),
        {"r": run_id, "l": limit, "o": offset},
    )
    return [Execution(**dict(row._mapping)) for row in rows]


# --- the mock sandbox's idempotency store -----------------------------------------------------------


def keep_mock_result(conn: sa.Connection, idempotency_key: str, execution_id: str, result: dict[str, Any]) -> None:
    """The mock sandbox ran ``execution_id`` to its end: keep its result (the first one kept wins)."""
    conn.execute(
        sql(
            "INSERT INTO app.mock_sandbox_results (idempotency_key, execution_id, result) "
            "VALUES (:k, :e, CAST(:r AS jsonb)) ON CONFLICT (idempotency_key) DO NOTHING"
        ),
        {"k": idempotency_key, "e": execution_id, "r": to_json(result)},
    )


def find_mock_result(conn: sa.Connection, idempotency_key: str) -> dict[str, Any] | None:
    row = conn.execute(
        sql("SELECT result FROM app.mock_sandbox_results WHERE idempotency_key = :k"),
        {"k": idempotency_key},
    ).first()
    return dict(row.result) if row is not None else None
