"""``app.opencode_calls``: the coding-agent ledger, keyed (and cached) by op key."""

from __future__ import annotations

import secrets
from typing import Any

import sqlalchemy as sa

from kodo.store import to_json
from kodo.store.spend import Charge
from kodo.store.statements import sql


def find(conn: sa.Connection, op_key: str) -> dict[str, Any] | None:
    row = conn.execute(sql("SELECT * FROM app.opencode_calls WHERE op_key = :k"), {"k": op_key}).first()
    return None if row is None else dict(row._mapping)


def record(
    conn: sa.Connection,
    *,
    op_key: str,
    run_id: str,
    step_id: str,
    attempt: int,
    call: dict[str, Any],
    charge: Charge | None = None,
) -> None:
    """Ledger one agent call (once per op key), with its usage and cost when it reported any."""
    conn.execute(
        sql(
            "INSERT INTO app.opencode_calls (id, op_key, run_id, step_id, attempt, agent, mode, session_id, "
            "schema_hash, prompt, request, response, structured, error, duration_ms, model, tenant_id, input_tokens, "
            "output_tokens, cached_tokens, cost_usd, priced_usd) VALUES (:id, :k, :r, :s, :a, "
            ":agent, :mode, :session, :schema_hash, :prompt, CAST(:request AS jsonb), CAST(:response AS jsonb), "
            "CAST(:structured AS jsonb), :error, :duration, :model, (SELECT tenant_id FROM app.runs WHERE id = :r), "
            ":input_tokens, :output_tokens, "
            ":cached_tokens, :cost, :priced) ON CONFLICT (op_key) DO NOTHING"
        ),
        {
            "id": "occall_" + secrets.token_hex(8),
            "k": op_key,
            "r": run_id,
            "s": step_id,
            "a": attempt,
            "agent": call["agent"],
            "mode": call["mode"],
            "session": call.get("sessionId"),
            "schema_hash": call["schemaHash"],
            "prompt": call["prompt"],
            "request": to_json(call.get("request", {})),
            "response": to_json(call.get("response")),
            "structured": to_json(call.get("structured")),
            "error": call.get("error"),
            "duration": call.get("durationMs"),
            "model": charge.model if charge else None,
            "input_tokens": charge.input_tokens if charge else 0,
            "output_tokens": charge.output_tokens if charge else 0,
            "cached_tokens": charge.cached_tokens if charge else 0,
            "cost": charge.cost_usd if charge else 0,
            "priced": charge.priced_usd if charge else 0,
        },
    )
