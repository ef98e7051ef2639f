"""``app.recipes``: the legacy caps table (queue, concurrency, steps, sandbox minutes per recipe name and
version) that the queue policy reads at admission. Not the recipe registry: that is ``recipe_versions``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from kodo.models import Recipe
from kodo.store.statements import sql


def _row_to_recipe(row: sa.Row[Any]) -> Recipe:
    return Recipe(
        id=row.id,
        name=row.name,
        version=row.version,
        queue_name=row.queue_name,
        max_concurrency=row.max_concurrency,
        max_steps=row.max_steps,
        max_sandbox_minutes=row.max_sandbox_minutes,
    )


def find(conn: sa.Connection, name: str, version: int | None = None) -> Recipe | None:
    """The recipe with this name: the exact version if given, else the highest."""
    if version is None:
        row = conn.execute(
            sql("SELECT * FROM app.recipes WHERE name = :n ORDER BY version DESC LIMIT 1"), {"n": name}
        ).first()
    else:
        row = conn.execute(
            sql("SELECT * FROM app.recipes WHERE name = :n AND version = :v"), {"n": name, "v": version}
        ).first()
    return None if row is None else _row_to_recipe(row)
