"""Recovery fixtures: the rows of one in-flight run, dumped from a database as JSON and loaded into a fresh one.

A fixture is recorded once, with the code of its day (``tests/e2e/record_recovery_fixtures.py``), and checked in
under ``tests/fixtures/``. Loading it into a fresh template database and starting a worker with today's code shows
that what DBOS checkpointed then (workflow inputs, step outputs) is still understood now.

Normalised so it loads anywhere: the recording's ``KODO_HOME`` is ``{KODO_HOME}`` (put back at load), the
executor id is fixed (``EXECUTOR_ID``), and a parked run's deadline and delayed continuation are moved to 2100 so
nothing times out between the recording and the test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

FIXTURES = Path(__file__).parent / "fixtures"
EXECUTOR_ID = "recorded-monolith"
HOME = "{KODO_HOME}"
FAR_FUTURE_MS = 4102444800000  # 2100-01-01T00:00:00Z
FAR_FUTURE = "2100-01-01T00:00:00+00:00"
# Rows a process writes for itself at start (queues, migrations): the loading worker writes its own.
_SKIPPED = frozenset({"dbos.queues", "dbos.dbos_migrations", "app.schema_migrations"})

Rows = dict[str, list[dict[str, Any]]]


def _tables(conn: sa.Connection) -> list[str]:
    names = conn.execute(
        sa.text("SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname IN ('app', 'dbos') ORDER BY 1")
    ).scalars()
    return [name for name in names if name not in _SKIPPED]


def _rows(conn: sa.Connection, table: str) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(sa.text(f"SELECT to_jsonb(t) FROM {table} t")).scalars()]


def _replace(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_replace(item, old, new) for item in value]
    if isinstance(value, dict):
        return {key: _replace(item, old, new) for key, item in value.items()}
    return value


def _normalize(table: str, row: dict[str, Any], home: Path) -> dict[str, Any]:
    row = _replace(row, str(home), HOME)
    if table == "dbos.workflow_status" and row.get("delay_until_epoch_ms") is not None:
        row["delay_until_epoch_ms"] = FAR_FUTURE_MS
    if table == "app.human_gates" and row.get("deadline_at") is not None and row.get("resolved_at") is None:
        row["deadline_at"] = FAR_FUTURE
    return row


def dump(conn: sa.Connection, template: sa.Connection, home: Path) -> Rows:
    """Every app and dbos row of ``conn`` that its template database does not hold, normalised."""
    found: Rows = {}
    for table in _tables(conn):
        base = {json.dumps(row, sort_keys=True) for row in _rows(template, table)}
        rows = [row for row in _rows(conn, table) if json.dumps(row, sort_keys=True) not in base]
        kept = [_normalize(table, row, home) for row in rows]
        if kept:
            found[table] = kept
    return found


def write(name: str, rows: Rows) -> Path:
    path = FIXTURES / f"{name}.json"
    path.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    return path


def read(name: str) -> Rows:
    rows: Rows = json.loads((FIXTURES / f"{name}.json").read_text())
    return rows


def load(conn: sa.Connection, rows: Rows, home: Path) -> None:
    """Insert the fixture's rows (``{KODO_HOME}`` put back) in the caller's transaction, triggers and foreign
    keys off while it loads (as a restore does); each serial sequence then continues after its largest id."""
    conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
    for table, table_rows in rows.items():
        schema, name = table.split(".")
        columns = conn.execute(
            sa.text(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = :s AND table_name = :t "
                "AND is_generated = 'NEVER' ORDER BY ordinal_position"
            ),
            {"s": schema, "t": name},
        ).scalars()
        listed = ", ".join(f'"{column}"' for column in columns)
        insert = sa.text(
            f"INSERT INTO {table} ({listed}) OVERRIDING SYSTEM VALUE "
            f"SELECT {listed} FROM jsonb_populate_record(NULL::{table}, CAST(:row AS jsonb))"
        )
        for row in table_rows:
            conn.execute(insert, {"row": json.dumps(_replace(row, HOME, str(home)))})
    sequences = conn.execute(
        sa.text(
            "SELECT c.table_schema || '.' || c.table_name, c.column_name, "
            "pg_get_serial_sequence(c.table_schema || '.' || c.table_name, c.column_name) "
            "FROM information_schema.columns c WHERE c.table_schema IN ('app', 'dbos') "
            "AND pg_get_serial_sequence(c.table_schema || '.' || c.table_name, c.column_name) IS NOT NULL"
        )
    ).all()
    for table, column, sequence in sequences:
        if table in rows:
            conn.execute(sa.text(f'SELECT setval(:q, (SELECT max("{column}") FROM {table}))'), {"q": sequence})
