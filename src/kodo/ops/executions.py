"""A run's sandbox executions, from the execution ledger (``app.sbx_executions``), for the API, the run page
and ``kodo ops executions``."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

from kodo.errors import NotFound
from kodo.ops.context import MAX_EXECUTIONS, Ops
from kodo.store import executions, runs

MAX_LIMIT = MAX_EXECUTIONS


class ExecutionRow(TypedDict):
    executionId: str
    taskKey: str
    attempt: int
    status: str  # started | finished | interrupted | reused
    startedAt: str
    finishedAt: str | None
    exit: int | None
    errCode: str | None
    provider: str
    executorId: str
    reusedFrom: str | None
    interruptedBy: str | None
    interruptedAt: str | None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def row(execution: executions.Execution) -> ExecutionRow:
    return {
        "executionId": execution.execution_id,
        "taskKey": execution.task_key,
        "attempt": execution.attempt,
        "status": execution.status,
        "startedAt": execution.started_at.isoformat(),
        "finishedAt": _iso(execution.finished_at),
        "exit": execution.exit,
        "errCode": execution.err_code,
        "provider": execution.provider,
        "executorId": execution.executor_id,
        "reusedFrom": execution.reused_from,
        "interruptedBy": execution.interrupted_by,
        "interruptedAt": _iso(execution.interrupted_at),
    }


def for_run(context: Ops, key: str, *, limit: int = 100, offset: int = 0) -> list[ExecutionRow]:
    """The run's executions (run id or workflow id) in the order they started; ``NotFound`` for an unknown run."""
    with context.engine.connect() as conn:
        run = runs.get(conn, key)
        if run is None:
            raise NotFound("run not found")
        found = executions.list_for_run(conn, run.id, limit=min(limit, MAX_LIMIT), offset=offset)
    return [row(execution) for execution in found]
