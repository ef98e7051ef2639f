"""Cancel and resume of a *run*: its work lives in phase workflows, so the operator acts on them.

* **cancel** — the run's current phase (``RunIntent``, a gate continuation ``<wid>:<gateKey>``, or a
  ``RepairRun``) is cancelled with its children (``ExecuteTask`` on sbxQ, an ``EscalateTimeout``);
  DBOS stops each at its next checkpoint, and the worker running a cancelled task's sandbox kills
  its process tree (``kodo.workflows.cancellation``). ``app.runs`` becomes ``canceled`` + ``NONE``.
* **resume** — the cancelled phase resumes from its last checkpoint (same id) on its own queue, its
  cancelled children first. A run cancelled while parked at an open gate is parked again: its
  continuation goes back to DELAYED until the gate's deadline (resuming it would time the gate
  out). ``app.runs`` is reopened as ``waiting_input`` (+ the gate's next action) for a parked run,
  ``repairing`` for a repair, else ``running`` (``queued`` if the phase never started).

Each is one transaction: the run row locked, the DBOS change as SQL (``store.dbos_control``), the run row
and the OPS audit row commit together or not at all (a crash in between leaves nothing to repair).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from kodo import faults
from kodo.errors import Conflict
from kodo.models import Run
from kodo.ops.context import Ops
from kodo.ops.targets import Target, audit
from kodo.store import dbos_control, dbos_workflows, gates, ops_audit, runs
from kodo.store import run_control as run_rows
from kodo.store.dbos_workflows import ACTIVE, WorkflowRow
from kodo.store.spend import release_run

INTERNAL_QUEUE = dbos_control.INTERNAL_QUEUE


def _phase(run: Run) -> str:
    return run.current_workflow_id or run.workflow_id


def cancel_run(ops: Ops, target: Target, actor: str, reason: str) -> dict[str, Any]:
    run = target.run
    assert run is not None
    if run.is_terminal:
        raise Conflict(f"cannot cancel run in status {run.status}", status=run.status)
    phase = _phase(run)
    with ops.engine.begin() as conn:
        locked = runs.get(conn, run.id, lock=True)  # one operator change of this run at a time
        if locked is None or locked.is_terminal:
            status = locked.status if locked else None
            raise Conflict(f"cannot cancel run in status {status}", status=status)
        row = dbos_workflows.get(conn, phase)
        active_children = [c.workflow_id for c in dbos_workflows.children(conn, phase) if c.status in ACTIVE]
        if row is not None and row.status in ACTIVE:
            changed_workflows = dbos_control.cancel(conn, [phase])
        else:
            changed_workflows = dbos_control.cancel(conn, active_children)
        release_run(conn, run.id)  # a call cancelled between reserve and settle holds nothing
        changed = run_rows.cancel(conn, run.id)
        faults.hit("ops.between_change_and_audit")
        audit(
            conn,
            target,
            "cancel",
            phase,
            actor,
            reason,
            workflowID=run.workflow_id,
            previousStatus=locked.status,
            phaseStatus=row.status if row else None,
            children=active_children,
            canceledWorkflowIDs=changed_workflows,
            runChanged=changed,
        )
    return {
        "accepted": True,
        "workflowID": run.workflow_id,
        "runId": run.id,
        "canceledWorkflowIDs": [phase, *active_children],
    }


def _cancelled_phase(conn: sa.Connection, run: Run) -> WorkflowRow | None:
    """The phase the operator cancelled: the current one, else the one named by the last cancel audit."""
    current = dbos_workflows.get(conn, _phase(run))
    if current is not None and current.status == "CANCELLED":
        return current
    for row in ops_audit.list_for(conn, [run.id], op="cancel", limit=1):
        named = dbos_workflows.get(conn, str(row.inline.get("targetWorkflowID")))
        if named is not None and named.status == "CANCELLED":
            return named
    return None


def _queue_for(row: WorkflowRow, queue: str, partitioned: bool) -> str:
    """Back on its own queue, unless that queue needs a partition key the row lacks."""
    return queue if row.partition_key is not None or not partitioned else INTERNAL_QUEUE


def resume_run(ops: Ops, target: Target, actor: str, reason: str) -> dict[str, Any]:
    run = target.run
    assert run is not None
    settings = ops.settings
    with ops.engine.begin() as conn:
        locked = runs.get(conn, run.id, lock=True)  # one operator change of this run at a time
        if locked is None or locked.status != "canceled":
            status = locked.status if locked else None
            raise Conflict(f"cannot resume run in status {status}", status=status)
        phase = _cancelled_phase(conn, locked)
        if phase is None:
            raise Conflict("cannot resume run: it has no cancelled phase workflow", status=locked.status)
        waiting_on = {phase.workflow_id, _phase(locked)}
        parked = next(
            (g for g in gates.list_for_run(conn, run.id) if g.is_open and g.resume_workflow_id in waiting_on), None
        )
        started = dbos_workflows.has_steps(conn, phase.workflow_id)
        children = [c for c in dbos_workflows.children(conn, phase.workflow_id) if c.status == "CANCELLED"]
        resumed = [phase.workflow_id]
        queue = _queue_for(phase, str(run.options.get("queueName") or "intentQ"), settings.intent_queue_partition)
        if parked is not None and parked.resume_workflow_id == phase.workflow_id:
            # The continuation itself was cancelled: park it again until the gate's deadline.
            deadline = parked.deadline_at
            until = int(deadline.timestamp() * 1000) if deadline is not None else 0
            dbos_workflows.redelay(conn, phase.workflow_id, until_ms=until, queue_name=queue)
        else:
            # (A phase cancelled while parking resumes, replays its park and enqueues the continuation.)
            for child in children:
                child_queue = _queue_for(child, "sbxQ", settings.sbx_queue_partition)
                dbos_control.resume(conn, child.workflow_id, queue_name=child_queue)
                resumed.append(child.workflow_id)
            dbos_control.resume(conn, phase.workflow_id, queue_name=queue)
        next_action = parked.next_action if parked is not None else None
        if parked is not None:
            status = "waiting_input"
        elif phase.name == "RepairRun":
            status = "repairing"
        elif phase.name == "RunIntent" and not started:
            status = "queued"
        else:
            status = "running"
        run_rows.reopen(conn, run.id, status=status, next_action=next_action)
        faults.hit("ops.between_change_and_audit")
        audit(
            conn,
            target,
            "resume",
            phase.workflow_id,
            actor,
            reason,
            workflowID=run.workflow_id,
            previousStatus=locked.status,
            runStatus=status,
            resumedWorkflowIDs=resumed,
            parkedAtGate=parked.gate_key if parked else None,
        )
    return {"accepted": True, "workflowID": run.workflow_id, "runId": run.id, "resumedWorkflowIDs": resumed}
