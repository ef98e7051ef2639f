"""``app.human_gates``, ``app.human_interactions`` (the reply ledger) and ``app.plan_approvals``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kodo.errors import Conflict
from kodo.identity import sha256_hex
from kodo.store import to_json


@dataclass(frozen=True, slots=True, kw_only=True)
class Gate:
    run_id: str
    gate_key: str
    topic: str
    purpose: str
    created_at: datetime


def open_gate(conn: sa.Connection, *, run_id: str, gate_key: str, purpose: str) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO app.human_gates (run_id, gate_key, topic, purpose) VALUES (:r, :g, :t, :p) "
            "ON CONFLICT DO NOTHING"
        ),
        {"r": run_id, "g": gate_key, "t": f"human:{gate_key}", "p": purpose},
    )


def list_for_run(conn: sa.Connection, run_id: str) -> list[Gate]:
    rows = conn.execute(
        sa.text("SELECT * FROM app.human_gates WHERE run_id = :r ORDER BY created_at DESC, gate_key DESC"),
        {"r": run_id},
    )
    return [Gate(**dict(row._mapping)) for row in rows]


def record_interaction(
    conn: sa.Connection,
    *,
    workflow_id: str,
    run_id: str,
    gate_key: str,
    topic: str,
    dedupe_key: str,
    payload: dict[str, Any],
    origin: str,
) -> bool:
    """Ledger a reply once per dedupe key. Returns True when it was already recorded (a replay).

    The same dedupe key with a different payload or topic is a conflict.
    """
    payload_hash = sha256_hex(payload)
    existing = conn.execute(
        sa.text(
            "SELECT topic, payload_hash FROM app.human_interactions WHERE workflow_id=:w AND gate_key=:g "
            "AND dedupe_key=:d"
        ),
        {"w": workflow_id, "g": gate_key, "d": dedupe_key},
    ).first()
    if existing is not None:
        if existing.topic != topic or existing.payload_hash != payload_hash:
            raise Conflict(f"dedupeKey conflict: {dedupe_key} was already used with a different payload")
        return True
    inserted = conn.execute(
        sa.text(
            "INSERT INTO app.human_interactions (workflow_id, run_id, gate_key, topic, dedupe_key, payload_hash, "
            "payload, origin) VALUES (:w, :r, :g, :t, :d, :h, CAST(:p AS jsonb), :o) ON CONFLICT DO NOTHING "
            "RETURNING id"
        ),
        {
            "w": workflow_id,
            "r": run_id,
            "g": gate_key,
            "t": topic,
            "d": dedupe_key,
            "h": payload_hash,
            "p": to_json(payload),
            "o": origin,
        },
    ).first()
    return inserted is None


def approve_plan(conn: sa.Connection, *, run_id: str, approved_by: str, notes: str | None) -> datetime:
    """Upsert the legacy plan-approval record; returns its time."""
    return conn.execute(  # type: ignore[no-any-return]
        sa.text(
            "INSERT INTO app.plan_approvals (run_id, approved_by, notes) VALUES (:r, :b, :n) "
            "ON CONFLICT (run_id) DO UPDATE SET approved_at = now(), approved_by = EXCLUDED.approved_by, "
            "notes = EXCLUDED.notes RETURNING approved_at"
        ),
        {"r": run_id, "b": approved_by, "n": notes},
    ).scalar_one()
