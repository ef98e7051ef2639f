"""Read models behind ``/metrics``: aggregates over kodo's tables and DBOS's, read at scrape time.

They are database-wide (the same numbers from every process that serves ``/metrics``) and exact:
histograms count every recorded duration, cumulatively per bucket, so they only ever grow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from kodo.store.queue_stats import WAITING_WORKFLOWS
from kodo.store.statements import sql

STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
GATE_BUCKETS = (1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)
STEP_DURATIONS = (
    "SELECT step_id AS label, extract(epoch FROM finished_at - started_at) AS seconds "
    "FROM app.run_steps WHERE finished_at IS NOT NULL"
)
GATE_WAITS = (
    "SELECT purpose AS label, extract(epoch FROM resolved_at - created_at) AS seconds "
    "FROM app.human_gates WHERE resolved_at IS NOT NULL"
)


@dataclass(frozen=True, slots=True)
class Histogram:
    label: str
    cumulative: list[int]  # one count per bucket bound, each counting every value <= the bound
    count: int
    total: float


@dataclass(frozen=True, slots=True)
class QueueRow:
    queue: str
    partition: str
    status: str
    workflows: int
    oldest_age_s: float


def runs_by_status(conn: sa.Connection) -> dict[str, int]:
    rows = conn.execute(sql("SELECT status, count(*) FROM app.runs GROUP BY status"))
    return {str(status): int(count) for status, count in rows}


def histogram(conn: sa.Connection, durations: str, buckets: Sequence[float]) -> list[Histogram]:
    """Per label of ``durations`` (a query of ``label, seconds``): cumulative bucket counts, count and sum."""
    filters = ", ".join(f"count(*) FILTER (WHERE seconds <= :b{i})" for i in range(len(buckets)))
    params = {f"b{i}": bound for i, bound in enumerate(buckets)}
    rows = conn.execute(
        sql(
            f"WITH d AS ({durations}) SELECT label, count(*), coalesce(sum(seconds), 0), {filters} "
            "FROM d GROUP BY label ORDER BY label"
        ),
        params,
    )
    return [Histogram(str(row[0]), [int(c) for c in row[3:]], int(row[1]), float(row[2])) for row in rows]


def queue_rows(conn: sa.Connection) -> list[QueueRow]:
    """Workflows waiting (ENQUEUED, DELAYED) or running (PENDING) per queue, partition and status, with the
    age of the oldest."""
    rows = conn.execute(
        sql(
            "SELECT queue_name, coalesce(queue_partition_key, ''), status, count(*), "
            "extract(epoch FROM clock_timestamp()) - min(created_at) / 1000.0 "
            f"FROM {WAITING_WORKFLOWS} WHERE queue_name IS NOT NULL "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
    )
    return [QueueRow(str(q), str(p), str(s), int(n), max(0.0, float(age))) for q, p, s, n, age in rows]


def open_gates(conn: sa.Connection) -> list[tuple[str, int, float]]:
    """(purpose, open gates, age of the oldest in seconds)."""
    rows = conn.execute(
        sql(
            "SELECT purpose, count(*), extract(epoch FROM clock_timestamp() - min(created_at)) "
            "FROM app.human_gates WHERE resolved_at IS NULL GROUP BY purpose ORDER BY purpose"
        )
    )
    return [(str(purpose), int(count), max(0.0, float(age))) for purpose, count, age in rows]


def sandbox_usage(conn: sa.Connection) -> list[tuple[str, str, int, float]]:
    """(provider, errCode, sandbox runs, sandbox minutes of wall time) over every recorded attempt."""
    rows = conn.execute(
        sql(
            "SELECT provider, err_code, count(*), "
            "coalesce(sum((response->'metrics'->>'wallMs')::numeric), 0) / 60000.0 "
            "FROM app.sbx_runs GROUP BY 1, 2 ORDER BY 1, 2"
        )
    )
    return [(str(p), str(code), int(n), float(minutes)) for p, code, n, minutes in rows]


def agent_spend(conn: sa.Connection) -> list[tuple[str, str, int, int, int, float]]:
    """(tenant, model, input tokens, output tokens, cached tokens, USD charged) over every ledgered agent call."""
    rows = conn.execute(
        sql(
            "SELECT coalesce(tenant_id, ''), coalesce(model, ''), sum(input_tokens), sum(output_tokens), "
            "sum(cached_tokens), sum(cost_usd) FROM app.opencode_calls GROUP BY 1, 2 ORDER BY 1, 2"
        )
    )
    return [(str(t), str(m), int(i), int(o), int(c), float(cost)) for t, m, i, o, c, cost in rows]
