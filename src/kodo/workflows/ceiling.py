"""The DBOS ceiling: a run's durable skeleton with empty bodies, the baseline of ``kodo bench ceiling``.

A kodo run (approve-on-appear, one task) is three workflows and seven DBOS operations:

    RunIntent:   begin (transaction)                                            → parks
    ResumeRun:   resume (transaction) → enqueue ExecuteTask → its result → ExecuteST (transaction)
    ExecuteTask: executeTask (step) → settleExecution (transaction)

``CeilingBegin``, ``CeilingResume`` and ``CeilingTask`` are the same shape, on the same queues
(intentQ and sbxQ, with their partitions and limits), through the same datasource transactions and
fan-out (``tasks.fan_out``, woken by the completion trigger), in the same worker, but every body is
empty: no run, step, gate or artifact rows. What they cost is what DBOS and its queues cost for one run
on this machine, so ``kodo bench burst`` against ``kodo bench ceiling`` in the same session says how much
of a run's time is kodo's own.

``CeilingResumeInline`` (``kodo bench ceiling --shape inline``) is a shape kodo's runs do not have yet: the
continuation enqueued on sbxQ (so the sandbox partition limits would still bound it) runs its one task's step
and settlement itself, with no child workflow: two workflows and five operations per run. It measures what
that design would leave DBOS to pay (docs/performance.md, *What bounds the numbers*).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from dbos import DBOS

from kodo.workflows import tasks
from kodo.workflows.runtime import transact

BEGIN_WORKFLOW = "CeilingBegin"
RESUME_WORKFLOW = "CeilingResume"
TASK_WORKFLOW = "CeilingTask"


def _empty(_conn: sa.Connection, key: str) -> dict[str, Any]:
    """A transaction step that writes nothing of its own: only DBOS's checkpoint commits."""
    return {"key": key}


@DBOS.workflow(name=BEGIN_WORKFLOW, max_recovery_attempts=10)
def ceiling_begin(key: str) -> dict[str, Any]:
    """RunIntent's skeleton: one transaction, then the run would park."""
    return transact("ceiling.begin", _empty, key)


@DBOS.workflow(name=RESUME_WORKFLOW, max_recovery_attempts=10)
def ceiling_resume(key: str, partition: str) -> dict[str, Any]:
    """ResumeRun's skeleton: a transaction, one child on sbxQ and its result, a transaction."""
    transact("ceiling.resume", _empty, key)
    child = {"taskKey": f"{key}:task", "runId": key}
    results = tasks.fan_out([child], priority=1, partition_key=partition, workflow_name=TASK_WORKFLOW)
    return transact("ceiling.execute", _empty, str(results[0]["key"]))


@DBOS.step(name="ceilingTask")
def _task_step(key: str) -> dict[str, Any]:
    return {"key": key}


def _run_task(key: str) -> dict[str, Any]:
    """A task's skeleton, wherever it runs: one step, then the transaction that settles its execution."""
    done = _task_step(key)
    return transact("ceiling.settle", _empty, str(done["key"]))


@DBOS.workflow(name=TASK_WORKFLOW, max_recovery_attempts=10)
def ceiling_task(task: dict[str, Any]) -> dict[str, Any]:
    """ExecuteTask's skeleton: the task, as a child workflow of its own."""
    return _run_task(str(task["runId"]))


RESUME_INLINE_WORKFLOW = "CeilingResumeInline"


@DBOS.workflow(name=RESUME_INLINE_WORKFLOW, max_recovery_attempts=10)
def ceiling_resume_inline(key: str, _partition: str) -> dict[str, Any]:
    """The continuation on sbxQ with its one task inline: a transaction, the task's step and settlement,
    a transaction; no child, so no enqueue, claim or result of one (the partition is its queue's, on sbxQ)."""
    transact("ceiling.resume", _empty, key)
    _run_task(key)
    return transact("ceiling.execute", _empty, key)
