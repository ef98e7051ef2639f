"""Human gates inside a workflow: open (gate row + prompt event), wait on ``human:<gateKey>``, decide.

Topics and event keys follow the predecessor's ABI: prompt ``ui:<g>``, result ``ui:<g>:result``,
decision ``decision:<g>``. A reply sent before the gate opens waits in the workflow's inbox.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from dbos import DBOS

from kodo.store import gates, runs
from kodo.workflows.runtime import transact

APPROVE_FORM = {
    "v": 1,
    "title": "Approve?",
    "fields": [
        {"k": "choice", "t": "enum", "vs": ["yes", "no"]},
        {"k": "rationale", "t": "str", "opt": True},
    ],
}
QUESTION_FORM = {"v": 1, "title": "Question", "fields": [{"k": "answer", "t": "str"}]}

_YES = {"yes", "approve", "approved"}


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
        word = body["decision"].strip().lower()
        decision = "yes" if word in _YES else "no"
    rationale = next((body[k] for k in ("rationale", "reason", "note", "notes") if isinstance(body.get(k), str)), None)
    return {"decision": decision, "rationale": rationale}


def _open(conn: sa.Connection, run_id: str, gate_key: str, purpose: str, next_action: str) -> str:
    gates.open_gate(conn, run_id=run_id, gate_key=gate_key, purpose=purpose)
    runs.update(conn, run_id, status="waiting_input", next_action=next_action)
    return datetime.now(UTC).isoformat()


def _close(conn: sa.Connection, run_id: str, clear_next_action: bool) -> str:
    runs.update(conn, run_id, status="running", clear_next_action=clear_next_action)
    return datetime.now(UTC).isoformat()


def wait_for_human(
    ctx: dict[str, Any], *, gate_key: str, purpose: str, next_action: str, form: dict[str, Any], ttl_s: int
) -> tuple[Any, str]:
    """Open the gate and wait for a reply; returns (payload or None on timeout, time of the answer)."""
    run_id = ctx["runId"]
    created = transact(f"gate.open.{purpose}", _open, run_id, gate_key, purpose, next_action)
    created_at = datetime.fromisoformat(created)
    DBOS.set_event(
        f"ui:{gate_key}",
        {
            "schemaVersion": 1,
            "formSchema": form,
            "ttlS": ttl_s,
            "createdAt": int(created_at.timestamp() * 1000),
            "deadlineAt": int((created_at + timedelta(seconds=ttl_s)).timestamp() * 1000),
            "uiHints": None,
            "defaults": None,
        },
    )
    message = DBOS.recv(f"human:{gate_key}", timeout_seconds=ttl_s)
    at = transact(f"gate.close.{purpose}", _close, run_id, message is not None)
    if message is None:
        DBOS.set_event(f"ui:{gate_key}:result", {"schemaVersion": 1, "state": "TIMED_OUT", "at": at})
    else:
        DBOS.set_event(f"ui:{gate_key}:result", {"schemaVersion": 1, "state": "RECEIVED", "payload": message, "at": at})
    return message, at


def _auto(conn: sa.Connection, ctx: dict[str, Any], gate_key: str) -> str:
    gates.open_gate(conn, run_id=ctx["runId"], gate_key=gate_key, purpose="approve-plan")
    gates.record_interaction(
        conn,
        workflow_id=ctx["workflowId"],
        run_id=ctx["runId"],
        gate_key=gate_key,
        topic=f"human:{gate_key}",
        dedupe_key=f"auto:{ctx['workflowId']}:{gate_key}",
        payload={"choice": "yes", "actor": "auto", "rationale": "autoApprove"},
        origin="auto",
    )
    return datetime.now(UTC).isoformat()


def approve_plan(ctx: dict[str, Any], gate_key: str, ttl_s: int) -> dict[str, Any]:
    """The plan-approval gate. ``autoApprove`` records an automatic "yes" by actor ``auto``."""
    if ctx.get("autoApprove"):
        at = transact("gate.auto.approve-plan", _auto, ctx, gate_key)
        decision = {"decision": "yes", "rationale": "autoApprove", "actor": "auto"}
    else:
        message, at = wait_for_human(
            ctx,
            gate_key=gate_key,
            purpose="approve-plan",
            next_action="APPROVE_PLAN",
            form=APPROVE_FORM,
            ttl_s=ttl_s,
        )
        decision = normalize_decision(message) if message is not None else {"decision": "no", "rationale": "timeout"}
    DBOS.set_event(
        f"decision:{gate_key}",
        {
            "schemaVersion": 1,
            "decision": decision["decision"],
            "payload": {"rationale": decision["rationale"]} if decision.get("rationale") else None,
            "at": at,
        },
    )
    return decision


# --- replies from outside a workflow (API, CLI, UI) ----------------------------------------------


def _legacy_dedupe_key(origin: str, workflow_id: str, run_id: str, gate_key: str, topic: str, payload: Any) -> str:
    from kodo.identity import sha256_hex

    body = {
        "origin": origin,
        "workflowId": workflow_id,
        "runId": run_id,
        "gateKey": gate_key,
        "topic": topic,
        "payloadHash": sha256_hex(payload),
    }
    return f"{origin}:{sha256_hex(body)}"


def send_plan_approval(conn: sa.Connection, client: Any, *, run: Any, approved_by: str, notes: str | None) -> datetime:
    """The legacy approve-plan: record it, and (for a live run) send "yes" to the plan gate's topic.

    The reply goes through the interaction ledger with a deterministic ``legacy-approve`` dedupe key, and
    the send carries that key as its idempotency key, so a repeated approval is one message. The topic
    is computed from the run id, so an approval sent before the gate opens waits in the inbox.
    """
    from kodo.identity import gate_key_for

    approved_at = gates.approve_plan(conn, run_id=run.id, approved_by=approved_by, notes=notes)
    if run.is_terminal:
        return approved_at
    gate_key = gate_key_for(run.id, "ApplyPatchST", "approve-plan")
    topic = f"human:{gate_key}"
    payload = {"approved": True, "approvedBy": approved_by, "notes": notes}
    dedupe = _legacy_dedupe_key("legacy-approve", run.workflow_id, run.id, gate_key, topic, payload)
    gates.record_interaction(
        conn,
        workflow_id=run.workflow_id,
        run_id=run.id,
        gate_key=gate_key,
        topic=topic,
        dedupe_key=dedupe,
        payload=payload,
        origin="legacy-approve",
    )
    client.send_in_transaction(conn, run.workflow_id, payload, topic, idempotency_key=dedupe)
    return approved_at
