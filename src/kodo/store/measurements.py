"""What the load tools (``kodo.bench``) and the liveness probes read: counters and small checks, SQL only.

Every function takes a connection and never commits, like the rest of ``kodo.store``.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from kodo.store.statements import sql


@dataclass(frozen=True, slots=True, kw_only=True)
class Counters:
    """DBOS operations checkpointed so far, and the database's committed transactions."""

    operations: int
    commits: int


def ping(conn: sa.Connection) -> None:
    """One round trip: raises if the database does not answer."""
    conn.execute(sql("SELECT 1"))


def server_version(conn: sa.Connection) -> str:
    return str(conn.execute(sql("SHOW server_version")).scalar_one())


def counters(conn: sa.Connection) -> Counters:
    operations = conn.execute(sql("SELECT count(*) FROM dbos.operation_outputs")).scalar_one()
    commits = conn.execute(
        sql("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    ).scalar_one()
    return Counters(operations=int(operations), commits=int(commits))


def workflow_statuses(conn: sa.Connection, workflow_ids: list[str]) -> list[tuple[str, str]]:
    """(workflow id, DBOS status) of the given workflows that exist."""
    rows = conn.execute(
        sql("SELECT workflow_uuid, status FROM dbos.workflow_status WHERE workflow_uuid = ANY(:ids)"),
        {"ids": workflow_ids},
    )
    return [(str(row.workflow_uuid), str(row.status)) for row in rows]


def backend_pid(conn: sa.Connection) -> int:
    """The process id of this connection's Postgres backend."""
    return int(conn.execute(sql("SELECT pg_backend_pid()")).scalar_one())


def live_executor_pids(conn: sa.Connection, hostname: str) -> set[int]:
    """PIDs of the executors registered as live on ``hostname`` (``app.executors``)."""
    query = sql("SELECT pid FROM app.executors WHERE stopped_at IS NULL AND hostname = :host")
    return {int(pid) for pid in conn.execute(query, {"host": hostname}).scalars()}


def most_replies_per_key(conn: sa.Connection, dedupe_prefix: str) -> int:
    """The most ledger rows any one (workflow, gate, dedupe key) has, among keys starting with the prefix."""
    return int(
        conn.execute(
            sql(
                "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM app.human_interactions "
                "WHERE dedupe_key LIKE :tag GROUP BY workflow_id, gate_key, dedupe_key) AS counted"
            ),
            {"tag": f"{dedupe_prefix}%"},
        ).scalar_one()
    )


def most_decisions_per_gate(conn: sa.Connection, goal_prefix: str) -> int:
    """The most decided gates of one purpose any run has, among runs whose goal starts with the prefix."""
    return int(
        conn.execute(
            sql(
                "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM app.human_gates g JOIN app.runs r "
                "ON r.id = g.run_id JOIN app.intents i ON i.id = r.intent_id WHERE i.goal LIKE :tag "
                "AND g.decision IS NOT NULL GROUP BY g.run_id, g.purpose) AS counted"
            ),
            {"tag": f"{goal_prefix}%"},
        ).scalar_one()
    )
