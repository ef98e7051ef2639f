"""Gates as answers show them: a gate (with its state and prompt times), an inbox row with its SLA, and a
reply-ledger row."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NotRequired

import sqlalchemy as sa
from typing_extensions import TypedDict

from kodo.models import Run
from kodo.store import gates as gate_store
from kodo.store.gates import Gate, Interaction
from kodo.views import epoch_ms
from kodo.views.reviews import GateReview

GateState = Literal["PENDING", "RECEIVED", "RESOLVED", "TIMED_OUT"]
SlaStatus = Literal["NORMAL", "WARNING", "CRITICAL"]


class GateView(TypedDict):
    """One gate (``GET /api/runs/{wid}/gates/{key}``; the plan gate's answer adds ``review``)."""

    workflowID: str
    gateKey: str
    topic: str
    purpose: str
    stepID: str
    generation: int
    state: GateState
    prompt: dict[str, Any] | None
    result: dict[str, Any] | None
    decision: dict[str, Any] | None
    origin: str | None
    createdAt: int | None
    deadlineAt: int | None
    resolvedAt: int | None
    review: NotRequired[GateReview]  # the plan gate's card (one gate's answer): the plan and its diff


class InboxRow(TypedDict):
    """An open gate of a waiting run (``GET /api/hitl/inbox``)."""

    workflowID: str
    runId: str
    gateKey: str
    topic: str
    purpose: str
    nextAction: str | None
    deadline: int | None
    slaStatus: SlaStatus
    mismatchRisk: bool
    createdAt: int | None
    details: Any


class InteractionRow(TypedDict):
    """One entry of a run's reply ledger (``GET /api/runs/{wid}/interactions``)."""

    workflowID: str
    gateKey: str
    topic: str
    dedupeKey: str
    payloadHash: str
    origin: str
    actor: str | None
    createdAt: int | None


def gate_state(gate: Gate) -> GateState:
    if gate.resolved_at is None:
        return "PENDING"
    if (gate.result or {}).get("state") == "TIMED_OUT":
        return "TIMED_OUT"
    return "RESOLVED" if gate.decision is not None or gate.purpose != "approve-plan" else "RECEIVED"


def gate_view(workflow_id: str, gate: Gate, origin: str | None) -> GateView:
    prompt = dict(gate.prompt or {})
    if prompt:
        prompt["createdAt"] = epoch_ms(gate.created_at)
        prompt["deadlineAt"] = epoch_ms(gate.deadline_at)
    return {
        "workflowID": workflow_id,
        "gateKey": gate.gate_key,
        "topic": gate.topic,
        "purpose": gate.purpose,
        "stepID": gate.step_id,
        "generation": gate.generation,
        "state": gate_state(gate),
        "prompt": prompt or None,
        "result": gate.result,
        "decision": gate.decision,
        "origin": origin,
        "createdAt": epoch_ms(gate.created_at),
        "deadlineAt": epoch_ms(gate.deadline_at),
        "resolvedAt": epoch_ms(gate.resolved_at),
    }


def origins(conn: sa.Connection, run_id: str) -> dict[str, str]:
    """Each gate's reply origin, by gate key."""
    return {i.gate_key: i.origin for i in gate_store.interactions(conn, run_id, limit=500)}


def gate_views(conn: sa.Connection, run: Run) -> list[GateView]:
    """The run's gates, newest first."""
    replied = origins(conn, run.id)
    return [gate_view(run.workflow_id, g, replied.get(g.gate_key)) for g in gate_store.list_for_run(conn, run.id)]


def sla_status(deadline_at: datetime | None, now: datetime) -> SlaStatus:
    """NORMAL with more than a minute left (or no deadline), WARNING within it, CRITICAL once past."""
    left = (deadline_at - now).total_seconds() if deadline_at else None
    return "NORMAL" if left is None or left > 60 else ("WARNING" if left > 0 else "CRITICAL")


def inbox_row(workflow_id: str, gate: Gate, now: datetime) -> InboxRow:
    """One open gate in the inbox; ``workflow_id`` is its run's (read for a page of gates in one statement)."""
    return {
        "workflowID": workflow_id,
        "runId": gate.run_id,
        "gateKey": gate.gate_key,
        "topic": gate.topic,
        "purpose": gate.purpose,
        "nextAction": gate.next_action,
        "deadline": epoch_ms(gate.deadline_at),
        "slaStatus": sla_status(gate.deadline_at, now),
        "mismatchRisk": gate.topic != f"human:{gate.gate_key}",
        "createdAt": epoch_ms(gate.created_at),
        # a budget gate: the limit hit, spend by step and model, the proposed top-up
        "details": (gate.prompt or {}).get("details"),
    }


def interaction_row(interaction: Interaction) -> InteractionRow:
    return {
        "workflowID": interaction.workflow_id,
        "gateKey": interaction.gate_key,
        "topic": interaction.topic,
        "dedupeKey": interaction.dedupe_key,
        "payloadHash": interaction.payload_hash,
        "origin": interaction.origin,
        "actor": interaction.actor,
        "createdAt": epoch_ms(interaction.created_at),
    }
