"""``app.workspaces`` (a run's source repository and base commit) and ``app.deliveries`` (the delivery ledger)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from kodo.store.statements import sql


@dataclass(frozen=True, slots=True, kw_only=True)
class Workspace:
    run_id: str
    source_repo: str | None
    base_commit: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    run_id: str
    mode: str  # branch | patch
    status: str  # pending | delivered | failed
    source_repo: str
    branch: str
    base_commit: str
    tree: str
    commit_sha: str | None
    artifact_uri: str | None
    error: dict[str, Any] | None
    requested_by: str
    created_at: datetime
    delivered_at: datetime | None


def record(conn: sa.Connection, *, run_id: str, source_repo: str | None, base_commit: str | None) -> Workspace:
    """Record the workspace's origin once (the first record wins) and return what is recorded."""
    conn.execute(
        sql(
            "INSERT INTO app.workspaces (run_id, source_repo, base_commit) VALUES (:r, :s, :b) "
            "ON CONFLICT (run_id) DO NOTHING"
        ),
        {"r": run_id, "s": source_repo, "b": base_commit},
    )
    found = get(conn, run_id)
    assert found is not None
    return found


def get(conn: sa.Connection, run_id: str) -> Workspace | None:
    row = conn.execute(sql("SELECT * FROM app.workspaces WHERE run_id = :r"), {"r": run_id}).first()
    return None if row is None else Workspace(**dict(row._mapping))


def ensure_delivery(
    conn: sa.Connection,
    *,
    run_id: str,
    mode: str,
    source_repo: str,
    branch: str,
    base_commit: str,
    tree: str,
    requested_by: str,
) -> Delivery:
    """The run's delivery row: inserted ``pending`` once, else the existing one (locked, so one deliverer works)."""
    conn.execute(
        sql(
            "INSERT INTO app.deliveries (run_id, mode, status, source_repo, branch, base_commit, tree, requested_by) "
            "VALUES (:r, :m, 'pending', :s, :b, :base, :t, :by) ON CONFLICT (run_id) DO NOTHING"
        ),
        {"r": run_id, "m": mode, "s": source_repo, "b": branch, "base": base_commit, "t": tree, "by": requested_by},
    )
    found = get_delivery(conn, run_id, lock=True)
    assert found is not None
    return found


def get_delivery(conn: sa.Connection, run_id: str, *, lock: bool = False) -> Delivery | None:
    suffix = " FOR UPDATE" if lock else ""
    row = conn.execute(sql(f"SELECT * FROM app.deliveries WHERE run_id = :r{suffix}"), {"r": run_id}).first()
    return None if row is None else Delivery(**dict(row._mapping))


def finish_delivery(
    conn: sa.Connection,
    *,
    run_id: str,
    status: str,
    commit_sha: str | None = None,
    artifact_uri: str | None = None,
    error: dict[str, Any] | None = None,
) -> Delivery:
    """Close the row as ``delivered`` (with its commit or artifact) or ``failed`` (with its error)."""
    if status not in {"delivered", "failed"}:
        raise ValueError(status)
    conn.execute(
        sql(
            "UPDATE app.deliveries SET status = :st, commit_sha = coalesce(:c, commit_sha), "
            "artifact_uri = coalesce(:a, artifact_uri), error = :e, "
            "delivered_at = CASE WHEN :st = 'delivered' THEN coalesce(delivered_at, clock_timestamp()) "
            "ELSE delivered_at END "
            "WHERE run_id = :r"
        ).bindparams(sa.bindparam("e", type_=JSONB)),
        {"r": run_id, "st": status, "c": commit_sha, "a": artifact_uri, "e": error},
    )
    found = get_delivery(conn, run_id)
    assert found is not None
    return found


def retry_delivery(conn: sa.Connection, run_id: str) -> None:
    """A failed delivery may be tried again (``kodo runs deliver``): back to ``pending``."""
    conn.execute(
        sql("UPDATE app.deliveries SET status = 'pending', error = NULL WHERE run_id = :r AND status = 'failed'"),
        {"r": run_id},
    )
