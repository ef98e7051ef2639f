"""``app.human_gates`` (one row per gate: prompt, deadline, result, decision), the reply ledger
``app.human_interactions`` and the legacy ``app.plan_approvals``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kodo.errors import Conflict
from kodo.identity import sha256_hex
from kodo.store import to_json
from kodo.store.statements import sql


@dataclass(frozen=True, slots=True, kw_only=True)
class Gate:
    run_id: str
    gate_key: str
    topic: str
    purpose: str
    step_id: str
    generation: int
    next_action: str | None
    prompt: dict[str, Any] | None
    deadline_at: datetime | None
    resume_workflow_id: str | None
    result: dict[str, Any] | None
    decision: dict[str, Any] | None
    resolved_at: datetime | None
    created_at: datetime

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


@dataclass(frozen=True, slots=True, kw_only=True)
class Interaction:
    workflow_id: str
    run_id: str
    gate_key: str
    topic: str
    dedupe_key: str
    payload_hash: str
    payload: dict[str, Any]
    origin: str
    created_at: datetime
    actor: str | None = None


_INTERACTION = "workflow_id, run_id, gate_key, topic, dedupe_key, payload_hash, payload, origin, created_at"


def _gate(row: sa.Row[Any]) -> Gate:
    return Gate(**dict(row._mapping))


def open_gate(
    conn: sa.Connection,
    *,
    run_id: str,
    gate_key: str,
    purpose: str,
    step_id: str,
    generation: int,
    next_action: str | None,
    prompt: dict[str, Any] | None,
    ttl_s: int | None,
    resume_workflow_id: str | None,
) -> Gate:
    """Open a gate once (a second open of the same key changes nothing) and return it."""
    conn.execute(
        sql(
            "INSERT INTO app.human_gates (run_id, gate_key, topic, purpose, step_id, generation, next_action, prompt, "
            "deadline_at, resume_workflow_id) VALUES (:r, :g, :t, :p, :s, :gen, :na, CAST(:prompt AS jsonb), "
            "CASE WHEN CAST(:ttl AS integer) IS NULL THEN NULL "
            "ELSE clock_timestamp() + make_interval(secs => CAST(:ttl AS integer)) END, :resume) "
            "ON CONFLICT DO NOTHING"
        ),
        {
            "r": run_id,
            "g": gate_key,
            "t": f"human:{gate_key}",
            "p": purpose,
            "s": step_id,
            "gen": generation,
            "na": next_action,
            "prompt": to_json(prompt),
            "ttl": ttl_s,
            "resume": resume_workflow_id,
        },
    )
    gate = get(conn, run_id, gate_key, lock=False)
    assert gate is not None
    return gate


def get(conn: sa.Connection, run_id: str, gate_key: str, *, lock: bool = False) -> Gate | None:
    query = "SELECT * FROM app.human_gates WHERE run_id = :r AND gate_key = :g" + (" FOR UPDATE" if lock else "")
    row = conn.execute(sql(query), {"r": run_id, "g": gate_key}).first()
    return None if row is None else _gate(row)


def resolve(
    conn: sa.Connection, run_id: str, gate_key: str, *, result: dict[str, Any], decision: dict[str, Any] | None
) -> None:
    conn.execute(
        sql(
            "UPDATE app.human_gates SET result = CAST(:res AS jsonb), decision = CAST(:dec AS jsonb), "
            "resolved_at = clock_timestamp() WHERE run_id = :r AND gate_key = :g AND resolved_at IS NULL"
        ),
        {"r": run_id, "g": gate_key, "res": to_json(result), "dec": to_json(decision)},
    )


def list_for_run(conn: sa.Connection, run_id: str) -> list[Gate]:
    """The run's gates, newest first."""
    rows = conn.execute(
        sql("SELECT * FROM app.human_gates WHERE run_id = :r ORDER BY created_at DESC, gate_key DESC"),
        {"r": run_id},
    )
    return [_gate(row) for row in rows]


def open_gates(conn: sa.Connection, limit: int, partition_like: list[str] | None = None) -> list[Gate]:
    """Open gates of runs waiting for a human, soonest deadline first (only runs whose partition matches
    one of ``partition_like``'s LIKE patterns, when given)."""
    scoped = "" if partition_like is None else "AND r.queue_partition_key LIKE ANY(:partitions) "
    rows = conn.execute(
        sql(
            "SELECT g.* FROM app.human_gates g JOIN app.runs r ON r.id = g.run_id "
            f"WHERE g.resolved_at IS NULL AND r.status = 'waiting_input' {scoped}"
            "ORDER BY g.deadline_at NULLS LAST, g.created_at, g.run_id LIMIT :n"
        ),
        {"n": limit, "partitions": partition_like or []},
    )
    return [_gate(row) for row in rows]


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
    actor: str | None = None,
) -> bool:
    """Ledger a reply once per dedupe key, with who sent it. Returns True when it was already recorded (a replay).

    The same dedupe key with a different payload or topic is a conflict.
    """
    payload_hash = sha256_hex(payload)
    inserted = conn.execute(
        sql(
            "INSERT INTO app.human_interactions (workflow_id, run_id, gate_key, topic, dedupe_key, payload_hash, "
            "payload, origin, actor) VALUES (:w, :r, :g, :t, :d, :h, CAST(:p AS jsonb), :o, :a) "
            "ON CONFLICT (workflow_id, gate_key, topic, dedupe_key) DO NOTHING RETURNING id"
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
            "a": actor,
        },
    ).first()
    existing = conn.execute(
        sql(
            "SELECT topic, payload_hash FROM app.human_interactions WHERE workflow_id=:w AND gate_key=:g "
            "AND dedupe_key=:d ORDER BY created_at"
        ),
        {"w": workflow_id, "g": gate_key, "d": dedupe_key},
    ).all()
    if any(row.topic != topic or row.payload_hash != payload_hash for row in existing):
        raise Conflict(f"dedupeKey conflict: {dedupe_key} was already used with a different payload")
    return inserted is None


def ledgered(conn: sa.Connection, workflow_id: str, gate_key: str, dedupe_key: str) -> list[Interaction]:
    """The ledger rows of one dedupe key at one gate (any topic), oldest first."""
    rows = conn.execute(
        sql(
            f"SELECT {_INTERACTION} FROM app.human_interactions WHERE workflow_id = :w AND gate_key = :g "
            "AND dedupe_key = :d ORDER BY created_at, id"
        ),
        {"w": workflow_id, "g": gate_key, "d": dedupe_key},
    )
    return [Interaction(**dict(row._mapping)) for row in rows]


def same_payload(conn: sa.Connection, run_id: str, origin: str, payload: dict[str, Any]) -> list[Interaction]:
    """The run's ledger rows from ``origin`` whose payload is exactly ``payload`` (by hash), oldest first."""
    rows = conn.execute(
        sql(
            f"SELECT {_INTERACTION} FROM app.human_interactions WHERE run_id = :r AND origin = :o "
            "AND payload_hash = :h ORDER BY created_at, id"
        ),
        {"r": run_id, "o": origin, "h": sha256_hex(payload)},
    )
    return [Interaction(**dict(row._mapping)) for row in rows]


def first_reply(conn: sa.Connection, workflow_id: str, gate_key: str) -> Interaction | None:
    """The reply that answers a gate: the first one ledgered on its human topic."""
    row = conn.execute(
        sql(
            "SELECT workflow_id, run_id, gate_key, topic, dedupe_key, payload_hash, payload, origin, created_at, "
            "actor "
            "FROM app.human_interactions WHERE workflow_id = :w AND gate_key = :g AND topic = :t "
            "ORDER BY created_at, id LIMIT 1"
        ),
        {"w": workflow_id, "g": gate_key, "t": f"human:{gate_key}"},
    ).first()
    return None if row is None else Interaction(**dict(row._mapping))


def interactions(conn: sa.Connection, run_id: str, limit: int = 200) -> list[Interaction]:
    rows = conn.execute(
        sql(
            "SELECT workflow_id, run_id, gate_key, topic, dedupe_key, payload_hash, payload, origin, created_at, "
            "actor "
            "FROM app.human_interactions WHERE run_id = :r ORDER BY created_at, dedupe_key LIMIT :n"
        ),
        {"r": run_id, "n": limit},
    )
    return [Interaction(**dict(row._mapping)) for row in rows]


def approve_plan(conn: sa.Connection, *, run_id: str, approved_by: str, notes: str | None) -> datetime:
    """Record the legacy plan approval once (append-only: a later approval, of a repaired run's new plan gate,
    never rewrites the first); returns when this approval was recorded."""
    inserted = conn.execute(
        sql(
            "INSERT INTO app.plan_approvals (run_id, approved_by, notes) VALUES (:r, :b, :n) "
            "ON CONFLICT (run_id) DO NOTHING RETURNING approved_at"
        ),
        {"r": run_id, "b": approved_by, "n": notes},
    ).scalar_one_or_none()
    return inserted or conn.execute(sql("SELECT now()")).scalar_one()  # type: ignore[no-any-return]
