"""``app.sbx_templates``: the immutable sandbox template registry, keyed by (recipe id, v, deps hash)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kodo.errors import Conflict
from kodo.store import to_json
from kodo.store.statements import sql


@dataclass(frozen=True, slots=True, kw_only=True)
class SbxTemplate:
    recipe_id: str
    recipe_v: str
    deps_hash: str
    template_key: str
    template_id: str
    build_meta: dict[str, Any]
    created_at: datetime


def _row(row: sa.Row[Any]) -> SbxTemplate:
    return SbxTemplate(
        recipe_id=row.recipe_id,
        recipe_v=row.recipe_v,
        deps_hash=row.deps_hash,
        template_key=row.template_key,
        template_id=row.template_id,
        build_meta=row.build_meta or {},
        created_at=row.created_at,
    )


def get(conn: sa.Connection, recipe_id: str, recipe_v: str, deps_hash: str) -> SbxTemplate | None:
    row = conn.execute(
        sql("SELECT * FROM app.sbx_templates WHERE recipe_id = :r AND recipe_v = :v AND deps_hash = :d"),
        {"r": recipe_id, "v": recipe_v, "d": deps_hash},
    ).first()
    return None if row is None else _row(row)


def list_for_version(conn: sa.Connection, recipe_id: str, recipe_v: str) -> list[SbxTemplate]:
    rows = conn.execute(
        sql("SELECT * FROM app.sbx_templates WHERE recipe_id = :r AND recipe_v = :v ORDER BY created_at"),
        {"r": recipe_id, "v": recipe_v},
    )
    return [_row(row) for row in rows]


def register(
    conn: sa.Connection,
    *,
    recipe_id: str,
    recipe_v: str,
    deps_hash: str,
    template_key: str,
    template_id: str,
    build_meta: dict[str, Any],
) -> tuple[SbxTemplate, bool]:
    """Insert a template; returns (template, created). The same key with another template id is drift."""
    row = conn.execute(
        sql(
            "INSERT INTO app.sbx_templates (recipe_id, recipe_v, deps_hash, template_key, template_id, build_meta) "
            "VALUES (:r, :v, :d, :k, :t, CAST(:m AS jsonb)) ON CONFLICT DO NOTHING RETURNING *"
        ),
        {"r": recipe_id, "v": recipe_v, "d": deps_hash, "k": template_key, "t": template_id, "m": to_json(build_meta)},
    ).first()
    if row is not None:
        return _row(row), True
    existing = get(conn, recipe_id, recipe_v, deps_hash)
    if existing is None or existing.template_key != template_key or existing.template_id != template_id:
        held = existing.template_id if existing else "another row"
        raise Conflict(
            f"sbx template drift: {template_key} is already registered as {held}; "
            f"templates are immutable, change the recipe's dependencies (or v) to register a new one"
        )
    return existing, False
