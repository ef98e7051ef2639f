"""``app.mock_receipts``: the ExecuteST side-effect receipt; ``seen_count > 1`` is a duplicate."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from kodo.identity import sha256_hex
from kodo.store import to_json
from kodo.store.statements import sql


def record(conn: sa.Connection, *, run_id: str, step_id: str, attempt: int, request: Any, response: Any) -> int:
    """Upsert the receipt for (run, step, request); returns how often it has now been seen."""
    payload_hash = sha256_hex(request)
    receipt_key = sha256_hex(f"{run_id}:{step_id}:{payload_hash}")
    return int(
        conn.execute(
            sql(
                "INSERT INTO app.mock_receipts (receipt_key, run_id, step_id, payload_hash, first_attempt, "
                "last_attempt, request_payload, response_payload) VALUES (:k, :r, :s, :h, :a, :a, "
                "CAST(:req AS jsonb), CAST(:res AS jsonb)) ON CONFLICT (receipt_key) DO UPDATE SET "
                "seen_count = app.mock_receipts.seen_count + 1, last_attempt = EXCLUDED.last_attempt, "
                "updated_at = clock_timestamp() RETURNING seen_count"
            ),
            {
                "k": receipt_key,
                "r": run_id,
                "s": step_id,
                "h": payload_hash,
                "a": attempt,
                "req": to_json(request),
                "res": to_json(response),
            },
        ).scalar_one()
    )
