"""The optional "merge?" gate: a human sees the final diff once the tests passed, before the change leaves kodo.

A run whose intent (or recipe ``intentTmpl``) asks for delivery with ``constraints.mergeGate = true`` parks
after ExecuteST succeeded at a gate of purpose ``merge`` (step ``DeliverST``, next action ``APPROVE_MERGE``,
TTL ``planApprovalTimeoutS``), like the plan gate: no slot or thread is held while it waits. Its card shows
the diff that will be committed (the reviewed tree: :mod:`kodo.workflows.delivery`). "yes" → the delivery
step runs; "no" → the run fails ``MERGE_REJECTED`` (its workspace restored, nothing delivered); no answer in
time → ``GATE_TIMEOUT``. ``autoApprove`` answers the plan gate only: a merge gate always waits for a human.
The continuation does not run the tests again: a phase that finds ExecuteST done goes straight here.
"""

from __future__ import annotations

import sqlalchemy as sa

from kodo.errors import StepFailure
from kodo.workflows import delivery, gates
from kodo.workflows.context import FinishedJson, GateSnapshot, ParkJson, Progress, RunContext
from kodo.workflows.runtime import transact

PURPOSE = "merge"
NEXT_ACTION = "APPROVE_MERGE"


def requested(ctx: RunContext) -> bool:
    """Whether the run asks for delivery behind a merge gate."""
    return delivery.requested(ctx) and ctx.constraints.get("mergeGate") is True


def past_tests(done: Progress) -> bool:
    """The run's tests passed on the patches it applied (a continuation of the merge gate, not a new fan-out)."""
    return "ExecuteST" in done.steps and "ApplyPatchST" in done.steps


def _state(gate: GateSnapshot | None, generation: int) -> str:
    """none | open | yes | no | timed_out | stale (a gate of an earlier generation)."""
    if gate is None or gate.generation < generation:
        return "stale" if gate is not None else "none"
    if gate.is_open:
        return "open"
    if gate.state == "TIMED_OUT":
        return "timed_out"
    return "yes" if (gate.decision or {}).get("decision") == "yes" else "no"


def _park(conn: sa.Connection, ctx: RunContext) -> ParkJson:
    return gates.park_in(
        conn,
        ctx,
        purpose=PURPOSE,
        next_action=NEXT_ACTION,
        form={**gates.APPROVE_FORM, "title": "Merge?"},
        ttl_s=ctx.plan_approval_timeout_s,
    )


def finish(ctx: RunContext, done: Progress, tasks: int = 0) -> ParkJson | FinishedJson:
    """After ExecuteST succeeded: park at the merge gate (when asked for and not answered), then deliver."""
    if requested(ctx):
        gate = done.gates.get(PURPOSE)
        state = _state(gate, ctx.generation)
        if state == "open":
            assert gate is not None
            return {"runId": ctx.run_id, "status": "waiting_input", "gateKey": gate.gate_key}
        if state in {"none", "stale"}:
            return transact("gate.park.merge", _park, ctx)
        if state == "timed_out":
            raise StepFailure("GATE_TIMEOUT", "Merge approval timed out")
        if state == "no":
            decision = (gate.decision if gate is not None else None) or {}
            raise StepFailure(
                "MERGE_REJECTED", f"Merge rejected: nothing delivered (rationale: {decision.get('rationale')})"
            )
    if delivery.requested(ctx):  # the reviewed change leaves kodo (a failed delivery does not fail the run)
        delivery.deliver_step(ctx.run_id)
    return {"runId": ctx.run_id, "status": "succeeded", "tasks": tasks}
