"""Apply the numbered ``migrations/NNNN_*.sql`` files once each, recorded in ``app.schema_migrations``.

Then load every shipped recipe pack (``packs/*.json``) once, recorded as ``pack:<name>``: its versions are
imported and promoted to stable, so a fresh database can start ``compile-default@v1`` at once.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import sqlalchemy as sa

from kodo.store import recipe_versions
from kodo.store.statements import sql

_LOCK_ID = 0x6B6F646F  # "kodo": one migrator at a time across processes


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) for every shipped migration, in order."""
    folder = resources.files("kodo.store") / "migrations"
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(name, (folder / name).read_text(encoding="utf-8")) for name in names]


def pack_files() -> list[tuple[str, dict[str, Any]]]:
    """(name, bundle) for every shipped recipe pack, in order."""
    folder = resources.files("kodo.store") / "packs"
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".json"))
    return [(name, json.loads((folder / name).read_text(encoding="utf-8"))) for name in names]


def applied(conn: sa.Connection) -> list[str]:
    exists = conn.execute(sql("SELECT to_regclass('app.schema_migrations')")).scalar()
    if exists is None:
        return []
    return list(conn.execute(sql("SELECT name FROM app.schema_migrations ORDER BY name")).scalars())


def drop_schemas(conn: sa.Connection) -> None:
    """Drop schemas ``app`` and ``dbos``: every run, artifact and workflow (``kodo db reset``)."""
    conn.execute(sql("DROP SCHEMA IF EXISTS app CASCADE"))
    conn.execute(sql("DROP SCHEMA IF EXISTS dbos CASCADE"))


def migrate(engine: sa.Engine) -> list[str]:
    """Apply pending migrations in one transaction; returns the names applied now."""
    with engine.begin() as conn:
        conn.execute(sql("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        conn.execute(sql("CREATE SCHEMA IF NOT EXISTS app"))
        conn.execute(
            sql(
                "CREATE TABLE IF NOT EXISTS app.schema_migrations "
                "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
        )
        done = set(applied(conn))
        now: list[str] = []
        for name, script in migration_files():
            if name in done:
                continue
            conn.connection.driver_connection.execute(script)  # type: ignore[union-attr]
            conn.execute(sql("INSERT INTO app.schema_migrations (name) VALUES (:n)"), {"n": name})
            now.append(name)
        for name, bundle in pack_files():
            marker = f"pack:{name}"
            if marker in done:
                continue
            recipe_versions.load_pack(conn, bundle)
            conn.execute(sql("INSERT INTO app.schema_migrations (name) VALUES (:n)"), {"n": marker})
            now.append(marker)
        return now
