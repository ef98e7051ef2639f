"""Bulk history for ``kodo bench history seed``: many finished runs, cloned from real ones, in batches.

A template is a run that kodo really ran (started over the API, finished by its workflow) in the partition
``TEMPLATE_PARTITION``. ``stage`` copies every row that run wrote, in kodo's tables and in DBOS's (its
workflows, their inputs, outputs and checkpoints), into temporary tables of this session; ``clone`` then
writes clone ``n`` of template ``n % templates`` for a range of ``n`` with one ``INSERT … SELECT`` per
table: the same columns and values, with every identifier of the template (run, workflow, task,
execution, receipt, agent call, gate and interaction ids) replaced by one derived from ``(identifier,
n)``, the partition set to ``hist-<n % 8>``, and every timestamp moved ``(n + 1) * spacing`` seconds into
the past. Clone ``n`` is the same rows each time it is written, so a seed that stopped part-way goes on
from the number of clones present (each batch is one transaction of the caller's).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import sqlalchemy as sa

from kodo.store.statements import sql

TEMPLATE_PARTITION = "hist-template"
CLONE_PARTITIONS = tuple(f"hist-{k}" for k in range(8))
PARKED_PARTITION_PREFIX = "hist-parked-"
FINISHED_STATUSES = ("succeeded", "failed", "canceled", "retries_exceeded")
# DBOS keeps its times as epoch milliseconds (bigint); these move with the clone's age.
_EPOCH_MS_COLUMNS = frozenset(
    {
        "created_at",
        "updated_at",
        "completed_at",
        "started_at_epoch_ms",
        "completed_at_epoch_ms",
        "retention_timestamp",
        "delay_until_epoch_ms",
        "workflow_deadline_epoch_ms",
    }
)
# Written before the rest: what the others' foreign keys point at.
_FIRST = (("app", "intents"), ("app", "runs"), ("dbos", "workflow_status"))
_TOKEN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16,}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryCounts:
    finished: int  # runs in a terminal status
    parked: int  # runs waiting for a human
    clones: int  # finished runs written by ``clone`` (partitions hist-0 … hist-7)
    templates: int  # finished runs of TEMPLATE_PARTITION


@dataclass(frozen=True, slots=True, kw_only=True)
class Column:
    name: str
    data_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StagedTable:
    schema: str
    table: str
    staged: str  # the temporary table holding the templates' rows as (template_index, body)
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Staged:
    templates: int
    tables: tuple[StagedTable, ...]
    tokens: tuple[str, ...]  # the templates' identifiers, longest first


def counts(conn: sa.Connection) -> HistoryCounts:
    row = conn.execute(
        sql(
            "/* bench */ SELECT count(*) FILTER (WHERE status = ANY(:finished)) AS finished, "
            "count(*) FILTER (WHERE status = 'waiting_input') AS parked, "
            "count(*) FILTER (WHERE queue_partition_key = ANY(:clones) AND status = ANY(:finished)) AS clones, "
            "count(*) FILTER (WHERE queue_partition_key = :template AND status = ANY(:finished)) AS templates "
            "FROM app.runs"
        ),
        {"finished": list(FINISHED_STATUSES), "clones": list(CLONE_PARTITIONS), "template": TEMPLATE_PARTITION},
    ).one()
    return HistoryCounts(
        finished=int(row.finished), parked=int(row.parked), clones=int(row.clones), templates=int(row.templates)
    )


def sample_workflows(conn: sa.Connection, per_status: int = 20) -> list[str]:
    """Workflow ids of some parked runs and some finished ones, for the benchmark to read."""
    return list(
        conn.execute(
            sql(
                "/* bench */ (SELECT workflow_id FROM app.runs WHERE status = 'waiting_input' ORDER BY id LIMIT :n) "
                "UNION ALL (SELECT workflow_id FROM app.runs WHERE status = 'succeeded' ORDER BY id LIMIT :n)"
            ),
            {"n": per_status},
        ).scalars()
    )


def template_runs(conn: sa.Connection) -> list[str]:
    """The finished template runs, oldest first."""
    return list(
        conn.execute(
            sql(
                "SELECT id FROM app.runs WHERE queue_partition_key = :p AND status = ANY(:finished) "
                "ORDER BY created_at, id"
            ),
            {"p": TEMPLATE_PARTITION, "finished": list(FINISHED_STATUSES)},
        ).scalars()
    )


def _tables(conn: sa.Connection) -> dict[tuple[str, str], list[Column]]:
    """Every table of app and dbos with its writable columns (no serial, identity or generated column)."""
    rows = conn.execute(
        sql(
            "SELECT c.table_schema, c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
            "JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE c.table_schema IN ('app', 'dbos') AND t.table_type = 'BASE TABLE' "
            "AND coalesce(c.column_default, '') NOT LIKE 'nextval(%' AND c.is_identity = 'NO' "
            "AND c.is_generated = 'NEVER' ORDER BY c.table_schema, c.table_name, c.ordinal_position"
        )
    )
    found: dict[tuple[str, str], list[Column]] = {}
    for row in rows:
        found.setdefault((row.table_schema, row.table_name), []).append(
            Column(name=row.column_name, data_type=row.data_type)
        )
    return found


def _source(schema: str, table: str, names: set[str]) -> str | None:
    """The rows of the templates in ``schema.table`` as (template_index, body), or None if it holds none."""
    templates = "unnest(CAST(:runs AS text[])) WITH ORDINALITY AS k(id, i)"
    if (schema, table) == ("app", "runs"):
        return f"SELECT k.i - 1, to_jsonb(x)::text FROM app.runs x JOIN {templates} ON x.id = k.id"
    if (schema, table) == ("app", "intents"):
        return (
            f"SELECT k.i - 1, to_jsonb(x)::text FROM app.intents x JOIN app.runs r ON r.intent_id = x.id "
            f"JOIN {templates} ON r.id = k.id"
        )
    if (schema, table) == ("app", "mock_sandbox_results"):
        return (
            "SELECT k.i - 1, to_jsonb(x)::text FROM app.mock_sandbox_results x "
            f"JOIN app.sbx_executions e ON e.execution_id = x.execution_id JOIN {templates} ON e.run_id = k.id"
        )
    if schema == "app" and "run_id" in names:
        return f"SELECT k.i - 1, to_jsonb(x)::text FROM app.{table} x JOIN {templates} ON x.run_id = k.id"
    if schema == "dbos":
        key = "workflow_uuid" if "workflow_uuid" in names else ("workflow_id" if "workflow_id" in names else None)
        if key is not None:
            return (
                f"SELECT w.template_index, to_jsonb(x)::text FROM dbos.{table} x "
                f"JOIN pg_temp.hist_workflows w ON x.{key} = w.workflow_uuid"
            )
    return None


def _stage_workflows(conn: sa.Connection, runs: list[str]) -> None:
    """The templates' workflows: each run's own, its continuations (``<wid>:<gate>``) and their children."""
    conn.execute(sql("DROP TABLE IF EXISTS pg_temp.hist_workflows"))
    conn.execute(
        sql(
            "CREATE TEMP TABLE hist_workflows AS "
            "SELECT k.i - 1 AS template_index, ws.workflow_uuid FROM app.runs r "
            "JOIN unnest(CAST(:runs AS text[])) WITH ORDINALITY AS k(id, i) ON r.id = k.id "
            "JOIN dbos.workflow_status ws ON ws.workflow_uuid = r.workflow_id "
            "OR (ws.workflow_uuid > r.workflow_id || ':' AND ws.workflow_uuid < r.workflow_id || ';')"
        ),
        {"runs": runs},
    )
    conn.execute(
        sql(
            "INSERT INTO hist_workflows SELECT w.template_index, ws.workflow_uuid FROM hist_workflows w "
            "JOIN dbos.workflow_status ws ON ws.parent_workflow_id = w.workflow_uuid"
        )
    )


def _constraint_columns(conn: sa.Connection, schema: str, table: str) -> set[str]:
    """Columns of the table's primary key and unique constraints: where its rows' identifiers are."""
    return set(
        conn.execute(
            sql(
                "SELECT a.attname FROM pg_constraint c JOIN pg_attribute a "
                "ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey) "
                "WHERE c.conrelid = to_regclass(:t) AND c.contype IN ('p', 'u')"
            ),
            {"t": f"{schema}.{table}"},
        ).scalars()
    )


def stage(conn: sa.Connection, runs: list[str]) -> Staged:
    """Copy the template runs' rows into temporary tables of this session (see the module's docstring)."""
    _stage_workflows(conn, runs)
    tables: list[StagedTable] = []
    tokens: set[str] = set()
    found = _tables(conn)
    for schema, table in sorted(found, key=lambda key: (_FIRST.index(key) if key in _FIRST else len(_FIRST), key)):
        columns = found[(schema, table)]
        source = _source(schema, table, {column.name for column in columns})
        if source is None:
            continue
        staged = f"hist_{schema}_{table}"
        conn.execute(sql(f"DROP TABLE IF EXISTS pg_temp.{staged}"))
        conn.execute(
            sql(f"CREATE TEMP TABLE {staged} (template_index int, body text) ON COMMIT PRESERVE ROWS"),
        )
        conn.execute(sql(f"INSERT INTO {staged} {source}"), {"runs": runs})
        bodies = list(conn.execute(sql(f"SELECT body FROM {staged}")).scalars())
        if not bodies:
            continue
        keys = _constraint_columns(conn, schema, table) | {"run_id", "workflow_id", "workflow_uuid"}
        for body in bodies:
            record = json.loads(body)
            for key in keys:
                if isinstance(record.get(key), str):
                    tokens.update(_TOKEN.findall(record[key]))
        tables.append(StagedTable(schema=schema, table=table, staged=staged, columns=tuple(columns)))
    return Staged(templates=len(runs), tables=tuple(tables), tokens=tuple(sorted(tokens, key=lambda t: (-len(t), t))))


def _fresh(token: str) -> str:
    """SQL for clone ``n``'s stand-in of ``token``: the same shape (a uuid, or hex of the same length)."""
    if _UUID.fullmatch(token):
        return f"CAST(md5('{token}/' || n) AS uuid)::text"
    return f"left(md5('{token}/' || n) || md5(n || '/{token}') || md5('{token}//' || n), {len(token)})"


def _select_list(table: StagedTable) -> str:
    out = []
    for column in table.columns:
        name = f'p."{column.name}"'
        if column.data_type == "timestamp with time zone":
            out.append(f"{name} - make_interval(secs => (n + 1) * :spacing)")
        elif table.schema == "dbos" and column.data_type == "bigint" and column.name in _EPOCH_MS_COLUMNS:
            out.append(f"{name} - CAST((n + 1) * :spacing * 1000 AS bigint)")
        else:
            out.append(name)
    return ", ".join(out)


def clone(conn: sa.Connection, staged: Staged, first: int, count: int, spacing_s: float) -> int:
    """Write clones ``first … first + count - 1`` (in the caller's transaction); returns the rows written."""
    body = "h.body"
    for token in staged.tokens:
        body = f"replace({body}, '{token}', {_fresh(token)})"
    body = f"replace({body}, '{TEMPLATE_PARTITION}', 'hist-' || (n % {len(CLONE_PARTITIONS)}))"
    written = 0
    for table in staged.tables:
        names = ", ".join(f'"{column.name}"' for column in table.columns)
        result = conn.execute(
            sql(
                f"INSERT INTO {table.schema}.{table.table} ({names}) SELECT {_select_list(table)} "
                f"FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS n "
                f"JOIN pg_temp.{table.staged} h ON h.template_index = n % :templates "
                f"CROSS JOIN LATERAL jsonb_populate_record(NULL::{table.schema}.{table.table}, "
                f"CAST({body} AS jsonb)) AS p"
            ),
            {"first": first, "last": first + count - 1, "templates": staged.templates, "spacing": spacing_s},
        )
        written += result.rowcount
    return written
