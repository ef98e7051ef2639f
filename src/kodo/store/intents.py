"""``app.intents``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from kodo.models import Intent
from kodo.store import to_json
from kodo.store.statements import sql


def _row_to_intent(row: sa.Row[Any]) -> Intent:
    payload = row.payload or {}
    return Intent(
        id=row.id,
        goal=row.goal,
        inputs=payload.get("inputs", {}),
        constraints=payload.get("constraints", {}),
        connectors=payload.get("connectors"),
        intent_hash=row.intent_hash,
        recipe_id=row.recipe_id,
        recipe_v=row.recipe_v,
        recipe_hash=row.recipe_hash,
        created_at=row.created_at,
    )


def create(conn: sa.Connection, intent: Intent) -> bool:
    """Insert an intent; returns False (and writes nothing) when the id already exists."""
    payload: dict[str, Any] = {"inputs": intent.inputs, "constraints": intent.constraints}
    if intent.connectors is not None:
        payload["connectors"] = intent.connectors
    result = conn.execute(
        sql(
            "INSERT INTO app.intents (id, goal, payload, intent_hash, recipe_id, recipe_v, recipe_hash, json) "
            "VALUES (:id, :goal, CAST(:payload AS jsonb), :intent_hash, :recipe_id, :recipe_v, :recipe_hash, "
            "CAST(:json AS jsonb)) ON CONFLICT DO NOTHING RETURNING id"
        ),
        {
            "id": intent.id,
            "goal": intent.goal,
            "payload": to_json(payload),
            "intent_hash": intent.intent_hash,
            "recipe_id": intent.recipe_id,
            "recipe_v": intent.recipe_v,
            "recipe_hash": intent.recipe_hash,
            "json": to_json(intent.as_json()) if intent.intent_hash else None,
        },
    )
    return result.first() is not None


def get(conn: sa.Connection, intent_id: str) -> Intent | None:
    row = conn.execute(sql("SELECT * FROM app.intents WHERE id = :id"), {"id": intent_id}).first()
    return None if row is None else _row_to_intent(row)


def count(conn: sa.Connection) -> int:
    return int(conn.execute(sql("SELECT count(*) FROM app.intents")).scalar_one())
