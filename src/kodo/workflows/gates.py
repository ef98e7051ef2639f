"""Human gates without a waiting workflow.

A run that reaches a gate *parks*: one transaction writes the gate row (prompt, deadline), sets
``waiting_input`` and enqueues its continuation ``ResumeRun`` with id ``<workflowId>:<gateKey>``
**delayed by the gate's TTL**; then the phase workflow ends. A parked run therefore holds no
queue slot and no thread. A reply is ledgered in ``app.human_interactions`` and wakes the
continuation (its delay set to now); if nobody answers, the delay runs out and the continuation
resolves the gate as ``TIMED_OUT``. A reply that arrives before the gate opens is found by the
park's own read of the ledger, so it is never lost.

Lock order, everywhere a gate is answered, checked or resolved: the run row first, then the gate row.
The run row serialises a reply with the park, so that either the reply's wake sees the delayed
continuation or the park sees the reply.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from dbos import EnqueueOptions

from kodo import faults, telemetry
from kodo.errors import Conflict, InvalidInput, NotFound
from kodo.identity import gate_key_for, sha256_hex
from kodo.models import Run
from kodo.store import clock, durable_status, gates, runs
from kodo.workflows.context import ParkJson, ResolvedGateJson, RunContext
from kodo.workflows.queues import queue_partition
from kodo.workflows.runtime import services, transact

APPROVE_FORM = {
    "v": 1,
    "title": "Approve?",
    "fields": [{"k": "choice", "t": "enum", "vs": ["yes", "no"]}, {"k": "rationale", "t": "str", "opt": True}],
}
QUESTION_FORM = {"v": 1, "title": "Question", "fields": [{"k": "answer", "t": "str"}]}
# An ask-user gate's form also carries the agent's question as its "description" (kodo.workflows.runs).
RESUME_WORKFLOW = "ResumeRun"
GATE_STEPS = {"ask-user": "CompileST", "approve-plan": "ApplyPatchST", "merge": "DeliverST"}
_YES = {"yes", "approve", "approved"}
DECIDED = frozenset({"approve-plan", "budget", "merge"})  # gates whose reply is a yes/no decision


def gate_key(run: Run | RunContext, purpose: str, generation: int | None = None) -> str:
    """The gate key of ``purpose`` for a run's generation (1 + its retry count)."""
    run_id = run.id if isinstance(run, Run) else run.run_id
    return gate_key_for(run_id, GATE_STEPS[purpose], purpose, generation if generation is not None else run.generation)


def resume_id(workflow_id: str, key: str) -> str:
    return f"{workflow_id}:{key}"


def normalize_decision(payload: Any) -> dict[str, Any]:
    """Decision as data: ``choice``, then ``approved``, then ``decision`` aliases; anything else is "no"."""
    body = payload if isinstance(payload, dict) else {}
    choice = body.get("choice")
    decision = "no"
    if isinstance(choice, str) and choice.strip().lower() in {"yes", "no"}:
        decision = choice.strip().lower()
    elif isinstance(body.get("approved"), bool):
        decision = "yes" if body["approved"] else "no"
    elif isinstance(body.get("decision"), str):
        decision = "yes" if body["decision"].strip().lower() in _YES else "no"
    rationale = next((body[k] for k in ("rationale", "reason", "note", "notes") if isinstance(body.get(k), str)), None)
    return {"decision": decision, "rationale": rationale}


# --- inside a workflow ---------------------------------------------------------------------------


def _park(
    conn: sa.Connection,
    ctx: RunContext,
    key: str,
    purpose: str,
    form: dict[str, Any],
    ttl_s: int,
    next_action: str,
    step_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> ParkJson:
    """Open the gate, mark the run waiting and enqueue its continuation, all in one transaction.

    The continuation is delayed by the gate's TTL, unless a reply is already in the ledger (sent
    before the gate opened), in which case it may run at once. The run row is locked first, so a
    concurrent reply either commits before this check (and is seen) or waits for this transaction
    (and then finds the delayed continuation to wake).
    """
    _locked(conn, ctx.run_id)
    continuation = resume_id(ctx.workflow_id, key)
    prompt: dict[str, Any] = {"schemaVersion": 1, "formSchema": form, "ttlS": ttl_s, "uiHints": None, "defaults": None}
    if details is not None:
        prompt["details"] = details
    gates.open_gate(
        conn,
        run_id=ctx.run_id,
        gate_key=key,
        purpose=purpose,
        step_id=step_id or GATE_STEPS[purpose],
        generation=ctx.generation,
        next_action=next_action,
        prompt=prompt,
        ttl_s=ttl_s,
        resume_workflow_id=continuation,
    )
    runs.update(conn, ctx.run_id, status="waiting_input", next_action=next_action, current_workflow_id=continuation)
    answered = gates.first_reply(conn, ctx.workflow_id, key) is not None
    svc = services()
    options: EnqueueOptions = {
        "workflow_name": RESUME_WORKFLOW,
        "queue_name": "intentQ",
        "workflow_id": continuation,
        "priority": int(ctx.priority or 1),
        "app_version": svc.settings.app_version,
    }
    if not answered:
        options["delay_seconds"] = float(ttl_s)
    if ctx.partition_key and svc.settings.intent_queue_partition:
        options["queue_partition_key"] = queue_partition(ctx.partition_key)
    trace_context = telemetry.current_context()
    if trace_context is not None:  # the continuation stays on the run's trace
        options["otel_context"] = trace_context
    svc.client.enqueue_in_transaction(conn, options, ctx.workflow_id, key)
    return {"runId": ctx.run_id, "status": "waiting_input", "gateKey": key, "resumeWorkflowId": continuation}


def _locked(conn: sa.Connection, run_id: str) -> Run:
    """The run, re-read with its row locked (see the lock order above)."""
    run = runs.get(conn, run_id, lock=True)
    if run is None:
        raise NotFound(f"run not found: {run_id}")
    return run


def park(ctx: RunContext, *, purpose: str, next_action: str, form: dict[str, Any], ttl_s: int) -> ParkJson:
    """Park the run at a gate (one transaction, one DBOS operation); the calling workflow then ends."""
    key = gate_key(ctx, purpose)
    return transact(f"gate.park.{purpose}", _park, ctx, key, purpose, form, ttl_s, next_action)


def park_in(
    conn: sa.Connection, ctx: RunContext, *, purpose: str, next_action: str, form: dict[str, Any], ttl_s: int
) -> ParkJson:
    """Park the run inside the caller's transaction (its step and the park commit as one operation)."""
    return _park(conn, ctx, gate_key(ctx, purpose), purpose, form, ttl_s, next_action)


def park_budget_in(
    conn: sa.Connection,
    ctx: RunContext,
    key: str,
    step_id: str,
    ttl_s: int,
    form: dict[str, Any],
    details: dict[str, Any],
) -> ParkJson:
    """Park the run at a ``budget`` gate (a spend limit reached before ``step_id``'s agent call), inside the
    caller's transaction; ``details`` (spend by step and model, the limit, a proposed top-up) go in its prompt."""
    return _park(conn, ctx, key, "budget", form, ttl_s, "APPROVE_BUDGET", step_id, details)


def resolve_in(conn: sa.Connection, ctx: RunContext, key: str) -> ResolvedGateJson:
    """Resolve a parked gate from the ledger: the first reply, or TIMED_OUT when there is none.

    Runs inside the continuation's first transaction (``kodo.workflows.phases.begin``).
    """
    _locked(conn, ctx.run_id)
    gate = gates.get(conn, ctx.run_id, key, lock=True)
    if gate is None:
        raise NotFound(f"gate not found: {key}")
    if gate.resolved_at is None:
        reply = gates.first_reply(conn, ctx.workflow_id, key)
        decision: dict[str, Any] | None
        at = clock.now(conn).isoformat()
        if reply is None and _window(gate):  # a tenant's spend window rolled over: not a human's silence
            result: dict[str, Any] = {"schemaVersion": 1, "state": "WINDOW_ROLLED_OVER", "at": at}
            decision = None
        elif reply is None:
            result = {"schemaVersion": 1, "state": "TIMED_OUT", "at": at}
            decision = {"decision": "no", "rationale": "timeout"} if gate.purpose in DECIDED else None
        else:
            result = {
                "schemaVersion": 1,
                "state": "RECEIVED",
                "payload": reply.payload,
                "payloadHash": reply.payload_hash,
                "origin": reply.origin,
                "actor": reply.actor,
                "at": at,
            }
            decision = normalize_decision(reply.payload) if gate.purpose in DECIDED else None
            decision = None if decision is None else {**decision, "actor": reply.actor}
        if decision is not None:
            decision = {**decision, "schemaVersion": 1, "at": at}
        gates.resolve(conn, ctx.run_id, key, result=result, decision=decision)
        runs.update(
            conn,
            ctx.run_id,
            status="running",
            clear_next_action=True,
            current_workflow_id=resume_id(ctx.workflow_id, key),
        )
        gate = gates.get(conn, ctx.run_id, key)
        assert gate is not None
    return {"gateKey": key, "purpose": gate.purpose, "result": gate.result, "decision": gate.decision}


def _window(gate: gates.Gate) -> bool:
    """A budget gate of a tenant's spend limit: its deadline is the window's roll-over."""
    return gate.purpose == "budget" and ((gate.prompt or {}).get("details") or {}).get("scope") == "tenant"


class Parked(Exception):
    """A step parked the run at a gate (a spend limit reached before an agent call): the phase ends with
    ``parked``, its park result."""

    def __init__(self, parked: ParkJson) -> None:
        super().__init__(parked["gateKey"])
        self.parked = parked


def _auto(conn: sa.Connection, ctx: RunContext, key: str) -> None:
    gates.open_gate(
        conn,
        run_id=ctx.run_id,
        gate_key=key,
        purpose="approve-plan",
        step_id="ApplyPatchST",
        generation=ctx.generation,
        next_action=None,
        prompt=None,
        ttl_s=None,
        resume_workflow_id=None,
    )
    payload = {"choice": "yes", "actor": "auto", "rationale": "autoApprove"}
    gates.record_interaction(
        conn,
        workflow_id=ctx.workflow_id,
        run_id=ctx.run_id,
        gate_key=key,
        topic=f"human:{key}",
        dedupe_key=f"auto:{ctx.workflow_id}:{key}",
        payload=payload,
        origin="auto",
        actor="auto",
    )
    at = clock.now(conn).isoformat()
    result = {"schemaVersion": 1, "state": "RECEIVED", "payload": payload, "origin": "auto", "at": at}
    decision = {"schemaVersion": 1, "decision": "yes", "rationale": "autoApprove", "actor": "auto", "at": at}
    gates.resolve(conn, ctx.run_id, key, result=result, decision=decision)


def auto_approve_in(conn: sa.Connection, ctx: RunContext) -> None:
    """``autoApprove``: the plan gate is opened and resolved "yes" by actor ``auto``, inside the caller's
    transaction (ApplyPatchST's, or the gate's own)."""
    _auto(conn, ctx, gate_key(ctx, "approve-plan"))


# --- replies from outside a workflow (API, CLI, UI) ----------------------------------------------


def wake(conn: sa.Connection, workflow_id: str, key: str) -> None:
    """Let a parked run's continuation run now, in the reply's own transaction (a no-op before it parks)."""
    durable_status.release_delayed(conn, resume_id(workflow_id, key))


DECISION_FIELDS = ("choice", "approved", "decision")


def require_decision(gate: gates.Gate, payload: dict[str, Any]) -> None:
    """A decision gate takes only a reply that tries to decide (400 otherwise, before any write).

    A reply with a decision field is normalised (an unrecognised value is "no", fail closed); a reply
    with none of them (an answer to a question, a note) is not a "no" but a mistake, refused.
    """
    if gate.purpose in DECIDED and not any(field in payload for field in DECISION_FIELDS):
        raise InvalidInput(
            f"gate {gate.gate_key} takes a decision: the payload needs one of {', '.join(DECISION_FIELDS)} "
            '(e.g. {"choice": "yes"})'
        )


def _replay(conn: sa.Connection, run: Run, key: str, dedupe_key: str, payload: dict[str, Any]) -> bool:
    """True when this dedupe key is already ledgered at the gate with this payload; 409 with another."""
    rows = gates.ledgered(conn, run.workflow_id, key, dedupe_key)
    if not rows:
        return False
    if any(row.payload_hash != sha256_hex(payload) or row.topic != f"human:{key}" for row in rows):
        raise Conflict(f"dedupeKey conflict: {dedupe_key} was already used with a different payload")
    return True


def reply(
    conn: sa.Connection,
    run: Run,
    key: str,
    *,
    payload: dict[str, Any],
    dedupe_key: str,
    origin: str,
    topic: str | None = None,
    actor: str | None = None,
) -> bool:
    """Ledger a reply to an open gate; returns ``isReplay``. Call ``wake`` after commit.

    A reply whose dedupe key is already ledgered with the same payload is a replay (no write) for as
    long as the ledger row exists, whatever the gate and run have done since. 404: no such gate.
    409: the dedupe key was used with another payload, the run is not waiting, the gate is resolved,
    or the topic is not the gate's. 400: a reply that is not a decision to a decision gate.
    """
    run = _locked(conn, run.id)
    gate = gates.get(conn, run.id, key, lock=True)
    if gate is None:
        raise NotFound("gate not found")
    require_budget_answer(gate, payload)
    expected = f"human:{key}"
    if topic is not None and topic != expected:
        raise Conflict(f"topic {topic} does not match gate topic {expected}")
    if _replay(conn, run, key, dedupe_key, payload):
        return True
    if gate.resolved_at is not None:
        raise Conflict(f"gate {key} is already resolved", status=run.status)
    if run.status != "waiting_input":
        raise Conflict(f"run is not waiting for input (status {run.status})", status=run.status)
    require_decision(gate, payload)
    replay = gates.record_interaction(
        conn,
        workflow_id=run.workflow_id,
        run_id=run.id,
        gate_key=key,
        topic=expected,
        dedupe_key=dedupe_key,
        payload=payload,
        origin=origin,
        actor=actor,
    )
    faults.hit("gate.reply_recorded")
    wake(conn, run.workflow_id, key)
    return replay


def require_budget_answer(gate: gates.Gate, payload: dict[str, Any]) -> None:
    """A budget gate takes a decision and, optionally, new limits that are numbers > 0 (400 otherwise)."""
    if gate.purpose != "budget":
        return
    if not any(field in payload for field in ("choice", "approved", "decision")):
        raise InvalidInput(f'budget gate {gate.gate_key} takes a decision, e.g. {{"choice": "yes", "maxCostUsd": 2}}')
    for name, whole in (("maxCostUsd", False), ("maxTokens", True)):
        if name in payload and not _positive_limit(payload[name], whole):
            raise InvalidInput(f"{name}: want a {'whole ' if whole else ''}number > 0 (got {payload[name]!r})")


def _positive_limit(value: Any, whole: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return False
    try:
        number = Decimal(str(value).strip())
    except ArithmeticError:
        return False
    return number.is_finite() and number > 0 and (not whole or number == number.to_integral_value())


def legacy_dedupe_key(origin: str, run: Run, key: str, payload: Any) -> str:
    body: dict[str, Any] = {
        "origin": origin,
        "workflowId": run.workflow_id,
        "runId": run.id,
        "gateKey": key,
        "topic": f"human:{key}",
        "payloadHash": sha256_hex(payload),
    }
    return f"{origin}:{sha256_hex(body)}"


def approve_plan_legacy(
    conn: sa.Connection, run: Run, *, approved_by: str, claimed_by: str, notes: str | None
) -> tuple[Any, str | None]:
    """The legacy approve-plan: a "yes" to the plan gate the run is waiting at, recorded with its actor
    (``approved_by``; the body's own ``approvedBy`` is kept as ``claimedBy``, a note).

    Returns (approvedAt, the gate key to wake). A run that is not waiting at its plan gate (finished, not
    there yet, or the gate already answered) is a 409 and nothing is written: decisions are append-only.
    """
    run = _locked(conn, run.id)
    key = gate_key(run, "approve-plan")
    gate = gates.get(conn, run.id, key, lock=True)
    if run.is_terminal:
        raise Conflict(f"run is finished (status {run.status}): its plan can no longer be approved", status=run.status)
    if gate is not None and gate.resolved_at is not None:
        raise Conflict(f"plan gate {key} is already resolved", status=run.status)
    if gate is None or run.status != "waiting_input":
        raise Conflict(f"run is not waiting at its plan gate (status {run.status})", status=run.status)
    if gates.first_reply(conn, run.workflow_id, key) is not None:
        raise Conflict(f"plan gate {key} is already answered", status=run.status)
    approved_at = gates.approve_plan(conn, run_id=run.id, approved_by=approved_by, notes=notes)
    payload = {"approved": True, "approvedBy": approved_by, "claimedBy": claimed_by, "notes": notes}
    gates.record_interaction(
        conn,
        workflow_id=run.workflow_id,
        run_id=run.id,
        gate_key=key,
        topic=f"human:{key}",
        dedupe_key=legacy_dedupe_key("legacy-approve", run, key, payload),
        payload=payload,
        origin="legacy-approve",
        actor=approved_by,
    )
    faults.hit("gate.reply_recorded")
    wake(conn, run.workflow_id, key)
    return approved_at, key


def legacy_event(
    conn: sa.Connection, run: Run, event: dict[str, Any], key: str | None = None, actor: str | None = None
) -> tuple[str, bool]:
    """``POST /runs/{id}/events``: returns (the gate the event answers, isReplay).

    An event is bound to the gate it names (``key``) or else to the run's newest open gate when it is
    first ledgered. The identical event sent again (same payload, from this route, for this run's
    current generation and, when named, this gate) is a replay of the first: no write, whatever gate is
    open now; so a client's retry can never answer a later gate. After a retry (a new generation) the
    same event is a new answer. 409 unless the run waits at an open gate (or the named gate is
    open); 400 for a non-decision to the plan gate.
    """
    run = _locked(conn, run.id)
    payload = {"approved": True, **event["payload"]} if event["type"] == "approve-plan" else dict(event)
    for earlier in gates.same_payload(conn, run.id, "legacy-event", payload):
        answered = gates.get(conn, run.id, earlier.gate_key)
        # A replay within the run's current generation; after a retry the same event is a new answer.
        if key in (None, earlier.gate_key) and answered is not None and answered.generation == run.generation:
            return earlier.gate_key, True
    if key is not None:
        named = gates.get(conn, run.id, key)
        if named is None:
            raise NotFound(f"gate not found: {key}")
        if not named.is_open:
            raise Conflict(f"gate {key} is already resolved", status=run.status)
    if run.status != "waiting_input":
        raise Conflict(f"cannot send event to run in status {run.status}", status=run.status)
    open_gates = [g for g in gates.list_for_run(conn, run.id) if g.is_open and key in (None, g.gate_key)]
    if not open_gates:
        raise Conflict(f"cannot send event to run in status {run.status}: no open gate", status=run.status)
    gate = open_gates[0]
    require_decision(gate, payload)
    reply(
        conn,
        run,
        gate.gate_key,
        payload=payload,
        origin="legacy-event",
        actor=actor,
        dedupe_key=legacy_dedupe_key("legacy-event", run, gate.gate_key, payload),
    )
    return gate.gate_key, False
