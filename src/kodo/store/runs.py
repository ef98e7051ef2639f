"""``app.runs``: one row per run, its status projection kept current by the workflow's steps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kodo.models import Run, RunStart
from kodo.store import to_json
from kodo.store.statements import Columns, sql

# A terminal status is never overwritten by a non-terminal one, except by an explicit repair.
_GUARDED_STATUS = (
    "CASE WHEN status IN ('succeeded','failed','canceled','retries_exceeded') "
    "AND CAST(:status AS text) NOT IN ('succeeded','failed','canceled','retries_exceeded') "
    "AND NOT CAST(:repair AS boolean) THEN status ELSE CAST(:status AS text) END"
)

# A run by its run id or its workflow id (``:key``); the run id wins if both match.
DUAL_LOOKUP = "SELECT * FROM app.runs WHERE id = :key OR workflow_id = :key ORDER BY (id = :key) DESC LIMIT 1"


def from_row(row: Columns) -> Run:
    return Run(
        id=row.id,
        intent_id=row.intent_id,
        workflow_id=row.workflow_id,
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
        trace_id=row.trace_id,
        last_step=row.last_step,
        error=row.error,
        retry_count=row.retry_count,
        next_action=row.next_action,
        tenant_id=row.tenant_id,
        queue_partition_key=row.queue_partition_key,
        intent_hash=row.intent_hash,
        recipe_id=row.recipe_id,
        recipe_v=row.recipe_v,
        recipe_hash=row.recipe_hash,
        budget=row.budget,
        options=row.options or {},
        current_workflow_id=row.current_workflow_id,
    )


def create(conn: sa.Connection, *, run_id: str, workflow_id: str, start: RunStart) -> Run | None:
    """Insert a queued run and return it as written; None (and nothing written) if the workflow id already
    has one."""
    result = conn.execute(
        sql(
            "INSERT INTO app.runs (id, intent_id, workflow_id, status, trace_id, tenant_id, queue_partition_key, "
            "intent_hash, recipe_id, recipe_v, recipe_hash, budget, options) VALUES (:id, :intent_id, :workflow_id, "
            "'queued', :trace_id, :tenant_id, :partition, :intent_hash, :recipe_id, :recipe_v, :recipe_hash, "
            "CAST(:budget AS jsonb), CAST(:options AS jsonb)) ON CONFLICT DO NOTHING RETURNING *"
        ),
        {
            "id": run_id,
            "intent_id": start.intent_id,
            "workflow_id": workflow_id,
            "trace_id": start.trace_id,
            "tenant_id": start.tenant_id,
            "partition": start.queue_partition_key,
            "intent_hash": start.intent_hash,
            "recipe_id": start.recipe_id,
            "recipe_v": start.recipe_v,
            "recipe_hash": start.recipe_hash,
            "budget": to_json(start.budget),
            "options": to_json(start.options()),
        },
    )
    row = result.first()
    return None if row is None else from_row(row)


def get(conn: sa.Connection, run_or_workflow_id: str, *, lock: bool = False) -> Run | None:
    """Dual lookup: by run id or by workflow id; ``lock`` holds the row until commit."""
    row = conn.execute(sql(DUAL_LOOKUP + (" FOR UPDATE" if lock else "")), {"key": run_or_workflow_id}).first()
    return None if row is None else from_row(row)


def workflow_ids(conn: sa.Connection, run_ids: list[str]) -> dict[str, str]:
    """Run id → workflow id of the given runs, in one statement (a list of gates names its runs by id)."""
    rows = conn.execute(sql("SELECT id, workflow_id FROM app.runs WHERE id = ANY(:ids)"), {"ids": run_ids})
    return {row.id: row.workflow_id for row in rows}


def update(
    conn: sa.Connection,
    run_id: str,
    *,
    status: str | None = None,
    last_step: str | None = None,
    next_action: str | None = None,
    clear_next_action: bool = False,
    error: dict[str, Any] | None = None,
    clear_error: bool = False,
    current_workflow_id: str | None = None,
    increment_retry: bool = False,
    repair: bool = False,
) -> None:
    """Update the projection. Status changes obey the terminal guard unless ``repair`` is set."""
    sets = ["updated_at = clock_timestamp()"]
    params: dict[str, Any] = {"id": run_id, "repair": repair}
    if status is not None:
        sets.append(f"status = {_GUARDED_STATUS}")
        params["status"] = status
    if last_step is not None:
        sets.append("last_step = :last_step")
        params["last_step"] = last_step
    if clear_next_action:
        sets.append("next_action = NULL")
    elif next_action is not None:
        sets.append("next_action = :next_action")
        params["next_action"] = next_action
    if clear_error:
        sets.append("error = NULL")
    elif error is not None:
        sets.append("error = CAST(:error AS jsonb)")
        params["error"] = to_json(error)
    if current_workflow_id is not None:
        sets.append("current_workflow_id = :current")
        params["current"] = current_workflow_id
    if increment_retry:
        sets.append("retry_count = retry_count + 1")
    conn.execute(sql(f"UPDATE app.runs SET {', '.join(sets)} WHERE id = :id"), params)


def count_for_intent(conn: sa.Connection, intent_id: str) -> int:
    return int(conn.execute(sql("SELECT count(*) FROM app.runs WHERE intent_id = :i"), {"i": intent_id}).scalar_one())


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What changes when anything an event stream shows of a run changes: its row and its counts."""

    status: str
    updated_at: datetime
    next_action: str | None
    last_step: str | None
    steps: int
    artifacts: int
    gates: int
    resolved_gates: int


_FINGERPRINT = sql(
    "SELECT r.status, r.updated_at, r.next_action, r.last_step, "
    "(SELECT count(*) FROM app.run_steps s WHERE s.run_id = r.id), "
    "(SELECT count(*) FROM app.artifacts a WHERE a.run_id = r.id), "
    "(SELECT count(*) FROM app.human_gates g WHERE g.run_id = r.id), "
    "(SELECT count(*) FROM app.human_gates g WHERE g.run_id = r.id AND g.resolved_at IS NOT NULL) "
    "FROM app.runs r WHERE r.id = :id"
)


def fingerprint(conn: sa.Connection, run_id: str) -> Fingerprint | None:
    """The run's fingerprint (by run id), or None when there is no such run."""
    row = conn.execute(_FINGERPRINT, {"id": run_id}).first()
    return None if row is None else Fingerprint(*row)


@dataclass(frozen=True, slots=True)
class RecentRun:
    """A row of the console's recent runs."""

    id: str
    workflow_id: str
    status: str
    next_action: str | None
    last_step: str | None
    updated_at: datetime
    goal: str


def recent(conn: sa.Connection, limit: int = 25, partition_like: list[str] | None = None) -> list[RecentRun]:
    """The newest runs with their intents' goals (only runs whose partition matches one of
    ``partition_like``'s LIKE patterns, when given)."""
    scoped = "" if partition_like is None else "WHERE r.queue_partition_key LIKE ANY(:partitions) "
    rows = conn.execute(
        sql(
            "SELECT r.id, r.workflow_id, r.status, r.next_action, r.last_step, r.updated_at, i.goal "
            f"FROM app.runs r JOIN app.intents i ON i.id = r.intent_id {scoped}ORDER BY r.created_at DESC LIMIT :n"
        ),
        {"n": limit, "partitions": partition_like or []},
    )
    return [RecentRun(*row) for row in rows]
