"""``app.executors``: one row per DBOS executor (worker process), kept fresh by its heartbeat."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kodo.store.statements import sql


@dataclass(frozen=True, slots=True, kw_only=True)
class Executor:
    executor_id: str
    role: str
    app_version: str
    hostname: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    leader_since: datetime | None
    heartbeat_age_ms: int

    def alive(self, dead_after_s: float) -> bool:
        """Heartbeating within the threshold and not stopped."""
        return self.stopped_at is None and self.heartbeat_age_ms <= dead_after_s * 1000


_SELECT = (
    "SELECT executor_id, role, app_version, hostname, pid, started_at, heartbeat_at, stopped_at, leader_since, "
    "CAST(extract(epoch FROM clock_timestamp() - heartbeat_at) * 1000 AS bigint) AS heartbeat_age_ms "
    "FROM app.executors"
)


def _executor(row: sa.Row[Any]) -> Executor:
    return Executor(**dict(row._mapping))


def register(conn: sa.Connection, *, executor_id: str, role: str, app_version: str, hostname: str, pid: int) -> None:
    """A process starts (or restarts) as this executor: fresh start time, heartbeat now, not stopped."""
    conn.execute(
        sql(
            "INSERT INTO app.executors (executor_id, role, app_version, hostname, pid) VALUES (:e, :r, :v, :h, :p) "
            "ON CONFLICT (executor_id) DO UPDATE SET role = EXCLUDED.role, app_version = EXCLUDED.app_version, "
            "hostname = EXCLUDED.hostname, pid = EXCLUDED.pid, started_at = clock_timestamp(), "
            "heartbeat_at = clock_timestamp(), stopped_at = NULL, leader_since = NULL"
        ),
        {"e": executor_id, "r": role, "v": app_version, "h": hostname, "p": pid},
    )


def beat(conn: sa.Connection, executor_id: str, *, leader: bool) -> None:
    """Refresh the heartbeat; ``leader_since`` is kept while leading and cleared otherwise."""
    conn.execute(
        sql(
            "UPDATE app.executors SET heartbeat_at = clock_timestamp(), stopped_at = NULL, leader_since = CASE "
            "WHEN CAST(:leader AS boolean) THEN coalesce(leader_since, clock_timestamp()) ELSE NULL END "
            "WHERE executor_id = :e"
        ),
        {"e": executor_id, "leader": leader},
    )


def stop(conn: sa.Connection, executor_id: str) -> None:
    conn.execute(
        sql("UPDATE app.executors SET stopped_at = clock_timestamp(), leader_since = NULL WHERE executor_id = :e"),
        {"e": executor_id},
    )


def list_all(conn: sa.Connection) -> list[Executor]:
    return [_executor(row) for row in conn.execute(sql(f"{_SELECT} ORDER BY heartbeat_at DESC, executor_id"))]


def get(conn: sa.Connection, executor_id: str) -> Executor | None:
    row = conn.execute(sql(f"{_SELECT} WHERE executor_id = :e"), {"e": executor_id}).first()
    return None if row is None else _executor(row)


def live_versions(conn: sa.Connection, dead_after_s: float) -> dict[str, list[str]]:
    """Application version → ids of the live executors serving it."""
    rows = conn.execute(
        sql(
            "SELECT app_version, executor_id FROM app.executors WHERE stopped_at IS NULL "
            "AND heartbeat_at >= clock_timestamp() - make_interval(secs => :dead) ORDER BY executor_id"
        ),
        {"dead": dead_after_s},
    )
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row.app_version, []).append(row.executor_id)
    return found


def silent(conn: sa.Connection, dead_after_s: float) -> list[Executor]:
    """Executors whose last heartbeat is older than the threshold (stopped ones included)."""
    rows = conn.execute(
        sql(f"{_SELECT} WHERE heartbeat_at < clock_timestamp() - make_interval(secs => :dead) ORDER BY executor_id"),
        {"dead": dead_after_s},
    )
    return [_executor(row) for row in rows]


def try_lead(conn: sa.Connection, lock_key: int) -> bool:
    """Take the session-level advisory lock ``lock_key`` on this connection, if it is free."""
    return bool(conn.execute(sql("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key}).scalar())


def release_lead(conn: sa.Connection, lock_key: int) -> None:
    conn.execute(sql("SELECT pg_advisory_unlock(:k)"), {"k": lock_key})


def pending_workflows(conn: sa.Connection) -> dict[str, int]:
    """How many PENDING DBOS workflows each executor holds."""
    rows = conn.execute(
        sql(
            "SELECT executor_id, count(*) FROM dbos.workflow_status WHERE status = 'PENDING' "
            "AND executor_id IS NOT NULL GROUP BY executor_id"
        )
    ).all()
    return {executor_id: int(count) for executor_id, count in rows}
