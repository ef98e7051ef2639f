"""The execution ledger's side of a task (``app.sbx_executions``): open an execution before its command runs,
settle it with the step that records its result, mark the ones a crash cut off.

* :func:`open_execution` (inside the ``executeTask`` step, before the command): asks the sandbox for a result
  kept under the attempt's idempotency key, then in one committed transaction marks the task's executions
  still ``started`` as ``interrupted`` (found by this executor; not the one whose kept result proves it ran to
  its end) and inserts this execution's ``started`` row.
* :func:`settle` (inside the ``settleExecution`` transaction, which commits with that step's checkpoint):
  ``finished``, or ``reused`` plus ``finished`` for the execution that produced the kept result.

So a crash after a command ended re-runs nothing (``reused``), and a crash during a command re-runs it once,
visibly (``interrupted`` then ``finished``).
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime

import sqlalchemy as sa
from dbos import DBOS

from kodo.adapters.sandbox import SandboxRequest, StoredResult
from kodo.identity import sha256_hex
from kodo.store import executions
from kodo.workflows.context import TaskJson
from kodo.workflows.outputs import ExecutionReference, SandboxResponseJson
from kodo.workflows.runtime import Services, own_transaction


def idempotency_key(task_key: str, attempt: int) -> str:
    """The same for every execution of one attempt of one task, and only for those."""
    return sha256_hex(f"{task_key}:{attempt}")[:40]


def executor() -> str:
    return str(DBOS.executor_id)


def open_execution(svc: Services, run_id: str, request: SandboxRequest, attempt: int) -> StoredResult | None:
    """Commit the execution's ``started`` row (after marking the task's cut-off executions interrupted);
    returns the result kept under the idempotency key if an earlier execution ran to its end."""
    stored = svc.sandbox.recall(request)

    def _open(conn: sa.Connection) -> None:
        if executions.get(conn, str(request.execution_id)) is not None:
            return  # a retry after a database outage: the commit had landed before the connection was lost
        executions.interrupt_for_task(
            conn, request.task_key, found_by=executor(), spare=stored.execution_id if stored is not None else None
        )
        executions.start(
            conn,
            execution_id=str(request.execution_id),
            run_id=run_id,
            task_key=request.task_key,
            attempt=attempt,
            idempotency_key=str(request.idempotency_key),
            provider=svc.sandbox.provider,
            executor_id=executor(),
            pid=os.getpid(),
        )

    own_transaction("executeTask.open", _open)
    return stored


def reference(request: SandboxRequest, stored: StoredResult | None) -> ExecutionReference:
    return {
        "executionId": str(request.execution_id),
        "idempotencyKey": str(request.idempotency_key),
        "reusedFrom": stored.execution_id if stored is not None else None,
        "producerFinishedAt": stored.finished_at if stored is not None else None,
    }


def cancelled(request: SandboxRequest) -> None:
    """An operator cancel stopped the command: the execution ends without a result."""
    own_transaction(
        "executeTask.cancelled",
        lambda conn: executions.interrupt(conn, str(request.execution_id), found_by=f"{executor()} (cancel)"),
    )


def settle(conn: sa.Connection, response: SandboxResponseJson) -> None:
    """Complete the execution with its result (call inside the transaction that checkpoints the result)."""
    reference: ExecutionReference = response["execution"]
    exit_code, err_code = int(response["exit"]), str(response["errCode"])
    producer = reference["reusedFrom"]
    if producer is not None:
        finished_at = reference["producerFinishedAt"]
        executions.finish(
            conn,
            producer,
            exit=exit_code,
            err_code=err_code,
            finished_at=datetime.fromisoformat(finished_at.replace("Z", "+00:00")) if finished_at else None,
        )
    executions.finish(conn, reference["executionId"], exit=exit_code, err_code=err_code, reused_from=producer)


def release(svc: Services, task: TaskJson, response: SandboxResponseJson) -> None:
    """The result is recorded: the sandbox may free what it kept only to recall it (idempotent; never fails)."""
    reference: ExecutionReference = response["execution"]
    request = SandboxRequest(
        task_key=task["taskKey"],
        cmd=task["cmd"],
        workdir=task.get("workdir"),
        idempotency_key=reference["idempotencyKey"],
        execution_id=reference["executionId"],
    )
    with contextlib.suppress(Exception):
        svc.sandbox.release(request)
