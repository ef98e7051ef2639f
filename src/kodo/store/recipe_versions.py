"""``app.recipe_versions`` (append-only), ``app.recipe_fixtures`` and the ``app.recipe_active`` pointer.

A version is content-addressed (``hash = sha256(canonical(spec))``). Re-inserting identical content is a
no-op; different content under an existing ``(id, v)`` is a conflict (a stable one is immutable).
Status moves ``draft → candidate → stable`` one step at a time; promotion to stable checks, in the same
transaction, that the version has at least one eval check and one fixture, then points the recipe at it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kodo.errors import Conflict, NotFound
from kodo.identity import sha256_hex
from kodo.store import to_json
from kodo.store.statements import sql

STATUSES = ("draft", "candidate", "stable")


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipeVersion:
    id: str
    v: str
    hash: str
    status: str
    spec: dict[str, Any]
    created_at: datetime
    promoted_at: datetime | None = None

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.v}"

    @property
    def eval_checks(self) -> list[dict[str, Any]]:
        return list(self.spec.get("eval") or [])

    @property
    def fixtures(self) -> list[dict[str, Any]]:
        return list(self.spec.get("fixtures") or [])


def spec_hash(spec: dict[str, Any]) -> str:
    """The content address of a recipe spec."""
    return sha256_hex(spec)


def version_order(v: str) -> tuple[Any, ...]:
    """Natural order of version strings: ``v2`` before ``v10``."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", v) if part)


def _row(row: sa.Row[Any]) -> RecipeVersion:
    return RecipeVersion(
        id=row.id,
        v=row.v,
        hash=row.hash,
        status=row.status,
        spec=row.json,
        created_at=row.created_at,
        promoted_at=row.promoted_at,
    )


def get(conn: sa.Connection, recipe_id: str, v: str, *, lock: bool = False) -> RecipeVersion | None:
    query = "SELECT * FROM app.recipe_versions WHERE id = :id AND v = :v" + (" FOR UPDATE" if lock else "")
    row = conn.execute(sql(query), {"id": recipe_id, "v": v}).first()
    return None if row is None else _row(row)


def list_versions(conn: sa.Connection, recipe_id: str) -> list[RecipeVersion]:
    """Every version of a recipe, newest (highest ``v``) first."""
    rows = conn.execute(sql("SELECT * FROM app.recipe_versions WHERE id = :id"), {"id": recipe_id})
    return sorted((_row(r) for r in rows), key=lambda rv: version_order(rv.v), reverse=True)


def list_all(conn: sa.Connection) -> list[RecipeVersion]:
    rows = conn.execute(sql("SELECT * FROM app.recipe_versions ORDER BY id"))
    return sorted((_row(r) for r in rows), key=lambda rv: (rv.id, version_order(rv.v)))


def active_versions(conn: sa.Connection) -> dict[str, str]:
    """recipe id → the stable version it points at."""
    rows = conn.execute(sql("SELECT recipe_id, v FROM app.recipe_active"))
    return {row.recipe_id: row.v for row in rows}


def fixture_count(conn: sa.Connection, recipe_id: str, v: str) -> int:
    return int(
        conn.execute(
            sql("SELECT count(*) FROM app.recipe_fixtures WHERE recipe_id = :id AND v = :v"),
            {"id": recipe_id, "v": v},
        ).scalar_one()
    )


def insert(conn: sa.Connection, spec: dict[str, Any]) -> tuple[RecipeVersion, bool]:
    """Insert a draft version and its fixtures; returns (version, created). Identical content is a no-op."""
    digest = spec_hash(spec)
    recipe_id, v = str(spec["id"]), str(spec["v"])
    row = conn.execute(
        sql(
            "INSERT INTO app.recipe_versions (id, v, hash, status, json) VALUES (:id, :v, :hash, 'draft', "
            "CAST(:json AS jsonb)) ON CONFLICT DO NOTHING RETURNING *"
        ),
        {"id": recipe_id, "v": v, "hash": digest, "json": to_json(spec)},
    ).first()
    if row is None:
        existing = get(conn, recipe_id, v)
        if existing is None:  # pragma: no cover - (id, hash) unique without (id, v): v is part of the hash
            raise Conflict(f"recipe {recipe_id}: the same content already exists under another version")
        if existing.hash == digest:
            return existing, False
        if existing.status == "stable":
            raise Conflict(f"stable recipe version is immutable: {recipe_id}@{v}", recipe=f"{recipe_id}@{v}")
        raise Conflict(
            f"recipe version {recipe_id}@{v} already exists as {existing.status} with different content "
            f"(hash {existing.hash[:12]}… ≠ {digest[:12]}…); import it under a new v",
            recipe=f"{recipe_id}@{v}",
        )
    for fixture in spec.get("fixtures") or []:
        conn.execute(
            sql(
                "INSERT INTO app.recipe_fixtures (recipe_id, v, fixture_id, json) VALUES (:id, :v, :f, "
                "CAST(:json AS jsonb)) ON CONFLICT DO NOTHING"
            ),
            {"id": recipe_id, "v": v, "f": fixture["id"], "json": to_json(fixture)},
        )
    return _row(row), True


def promote(conn: sa.Connection, recipe_id: str, v: str, to: str) -> RecipeVersion:
    """Move a version one step forward (draft → candidate → stable); promoting to its own status is a no-op.

    Stable needs ≥ 1 eval check and ≥ 1 fixture, checked here with the row locked, in the caller's
    transaction; on success the recipe's active pointer moves to this version.
    """
    if to not in STATUSES[1:]:
        raise Conflict(f"cannot promote to {to!r}: use candidate or stable")
    version = get(conn, recipe_id, v, lock=True)
    if version is None:
        raise NotFound(f"recipe version not found: {recipe_id}@{v}")
    if version.status == to:
        return version
    if STATUSES.index(to) != STATUSES.index(version.status) + 1:
        raise Conflict(
            f"cannot promote {recipe_id}@{v} from {version.status} to {to}: "
            f"versions move draft → candidate → stable one step at a time",
            status=version.status,
        )
    if to == "stable":
        checks, fixtures = len(version.eval_checks), fixture_count(conn, recipe_id, v)
        if checks < 1 or fixtures < 1:
            raise Conflict(
                f"promotion to stable needs at least 1 eval check and 1 fixture: {recipe_id}@{v} has "
                f"{checks} eval check(s) and {fixtures} fixture(s)",
                status=version.status,
            )
    row = conn.execute(
        sql(
            "UPDATE app.recipe_versions SET status = :to, promoted_at = clock_timestamp() "
            "WHERE id = :id AND v = :v RETURNING *"
        ),
        {"id": recipe_id, "v": v, "to": to},
    ).one()
    if to == "stable":
        conn.execute(
            sql(
                "INSERT INTO app.recipe_active (recipe_id, v) VALUES (:id, :v) ON CONFLICT (recipe_id) "
                "DO UPDATE SET v = EXCLUDED.v, updated_at = clock_timestamp()"
            ),
            {"id": recipe_id, "v": v},
        )
    return _row(row)


def load_pack(conn: sa.Connection, bundle: dict[str, Any]) -> list[RecipeVersion]:
    """Import a shipped pack and promote every version to stable (idempotent)."""
    loaded = []
    for spec in bundle["versions"]:
        version, _created = insert(conn, spec)
        for step in ("candidate", "stable"):
            if STATUSES.index(version.status) < STATUSES.index(step):
                version = promote(conn, version.id, version.v, step)
        loaded.append(version)
    return loaded
