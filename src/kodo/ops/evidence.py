"""Repro packs and proof cards of a run (reference §13): what happened, from recorded evidence only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from kodo.errors import NotFound
from kodo.identity import canonical
from kodo.models import Run
from kodo.ops.context import Ops
from kodo.store import repro, runs
from kodo.store.durable_status import get as durable_get


def _run(conn: sa.Connection, key: str) -> Run:
    run = runs.get(conn, key)
    if run is None:
        raise NotFound("run not found")
    return run


def snapshot(ops: Ops, key: str) -> dict[str, Any]:
    """ReproSnapshot: the run, its intent, every app row of it and its DBOS workflows, sorted for diffing."""
    with ops.engine.connect() as conn:
        run = _run(conn, key)
        scope = repro.workflow_scope(conn, run.workflow_id)
        ids = [row["workflow_id"] for row in scope]
        body: dict[str, Any] = {
            "meta": {
                "runId": run.id,
                "workflowId": run.workflow_id,
                "currentWorkflowId": run.current_workflow_id or run.workflow_id,
                "appVersion": ops.settings.app_version,
                "schema": "kodo.repro.v1",
            },
            "run": repro.run_row(conn, run.id),
            "intent": repro.intent_row(conn, run.intent_id),
            **repro.run_tables(conn, run.id),
            "dbos": {
                "workflowScope": ids,
                "statuses": scope,
                "operations": repro.operations(conn, ids),
                "events": repro.events(conn, ids),
            },
        }
    return body


def snapshot_text(ops: Ops, key: str) -> str:
    """The repro pack as canonical JSON (the form ``kodo ops repro --out`` writes)."""
    return canonical(snapshot(ops, key))


def _ms(value: Any) -> int:
    if isinstance(value, str):
        return int(datetime.fromisoformat(value).timestamp() * 1000)
    return int(value or 0)


def proofs(ops: Ops, key: str) -> list[dict[str, Any]]:
    """ProofCard[] (newest ``sourceTs`` first); an unknown run has none."""
    with ops.engine.connect() as conn:
        run = runs.get(conn, key)
        if run is None:
            return []
        tables = repro.run_tables(conn, run.id)
        phase = run.current_workflow_id or run.workflow_id
        durable = durable_get(conn, phase)
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    cards: list[dict[str, Any]] = []

    def card(ident: str, claim: str, evidence: str, source: str, source_ts: int, provenance: str, raw: str) -> None:
        cards.append(
            {
                "id": ident,
                "claim": claim,
                "evidence": evidence,
                "source": source,
                "ts": now,
                "sourceTs": source_ts,
                "provenance": provenance,
                "rawRef": raw,
            }
        )

    updated = int(run.updated_at.timestamp() * 1000)
    if run.intent_hash:
        card(
            "intent-identity",
            "Intent Identity",
            f"intentHash {run.intent_hash}",
            "sql",
            updated,
            "app.runs.intent_hash",
            f"sql://app.runs/{run.id}",
        )
    if durable is not None:
        card(
            "workflow-status-dbos",
            "Workflow Status (DBOS)",
            f"{phase}: {durable.status} ({durable.name})",
            "dbos",
            durable.updated_at_ms or 0,
            "dbos.workflow_status",
            f"dbos://workflows/{phase}",
        )
    card(
        "workflow-status-app",
        "Workflow Status (App)",
        f"{run.status}; next action {run.next_action}",
        "sql",
        updated,
        "app.runs.status",
        f"sql://app.runs/{run.id}",
    )
    for step in tables["runSteps"]:
        card(
            f"step-{step['step_id']}-{step['attempt']}",
            f"Step Execution: {step['step_id']}",
            f"attempt {step['attempt']} ({step['phase']}) finished {step['finished_at']}",
            "sql",
            _ms(step["finished_at"] or step["started_at"]),
            "app.run_steps",
            f"sql://app.run_steps/{run.id}/{step['step_id']}/{step['attempt']}",
        )
    kinds: dict[str, list[dict[str, Any]]] = {}
    for artifact in tables["artifacts"]:
        kinds.setdefault(artifact["kind"], []).append(artifact)
    for kind, items in sorted(kinds.items()):
        newest = max(_ms(a["created_at"]) for a in items)
        card(
            f"artifact-{kind}",
            f"Artifact Durability: {kind}",
            f"{len(items)} artifact(s) with sha256",
            "artifact",
            newest,
            "app.artifacts",
            items[0]["uri"],
        )
    duplicates = [r for r in tables["receipts"] if r["seen_count"] > 1]
    card(
        "exactly-once",
        "Side Effects Exactly Once",
        f"{len(tables['receipts'])} receipt(s), {len(duplicates)} seen more than once",
        "sql",
        updated,
        "app.mock_receipts.seen_count",
        f"sql://app.mock_receipts/{run.id}",
    )
    if run.budget:
        card(
            "budget-policy",
            "Budget Policy",
            canonical(run.budget),
            "policy",
            updated,
            "app.runs.budget",
            f"sql://app.runs/{run.id}",
        )
    if run.queue_partition_key:
        card(
            "queue-partition",
            "Queue Partition Policy",
            f"partition {run.queue_partition_key}",
            "policy",
            updated,
            "app.runs.queue_partition_key",
            f"sql://app.runs/{run.id}",
        )
    cards.sort(key=lambda c: (-c["sourceTs"], c["id"]))
    return cards
