"""OPS audit rows: ``app.artifacts`` with ``step_id='OPS'``, one per operator action (reference §12.2)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kodo.identity import artifact_uri
from kodo.models import NewArtifact
from kodo.store import artifacts
from kodo.store.statements import sql

STEP_ID = "OPS"
KIND = "json_diagnostic"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRow:
    anchor: str
    task_key: str
    inline: dict[str, Any]
    created_at: datetime


def add(conn: sa.Connection, anchor: str, payload: dict[str, Any]) -> str:
    """Write one audit row anchored at ``anchor`` (an app run id, else a DBOS workflow id); returns its key.

    Every action gets its own task key, so two identical actions at the same instant are two rows.
    """
    task_key = f"{payload.get('op', 'op')}:{secrets.token_hex(8)}"
    artifacts.add(
        conn,
        anchor,
        NewArtifact(
            step_id=STEP_ID,
            idx=0,
            kind=KIND,
            task_key=task_key,
            uri=artifact_uri(anchor, STEP_ID, task_key, "op.json"),
            inline=payload,
        ),
    )
    return task_key


def list_for(conn: sa.Connection, anchors: Sequence[str], *, op: str | None = None, limit: int = 100) -> list[AuditRow]:
    """Audit rows of the anchors, newest first (optionally only one kind of action)."""
    rows = conn.execute(
        sql(
            "SELECT run_id AS anchor, task_key, inline, created_at FROM app.artifacts "
            "WHERE step_id = 'OPS' AND run_id = ANY(:a) AND (CAST(:op AS text) IS NULL OR inline->>'op' = :op) "
            "ORDER BY created_at DESC, task_key LIMIT :n"
        ),
        {"a": list(anchors), "op": op, "n": limit},
    )
    return [AuditRow(**dict(row._mapping)) for row in rows]


def count(conn: sa.Connection) -> int:
    return int(conn.execute(sql("SELECT count(*) FROM app.artifacts WHERE step_id = 'OPS'")).scalar_one())


# --- the invariant: every audit row names a change DBOS shows, every fork has its audit row -------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OpsViolation:
    kind: str  # cancel_not_applied | resume_not_applied | fork_not_applied | fork_not_audited
    anchor: str | None
    workflow_id: str
    status: str | None  # the workflow's DBOS status now (None: no such workflow)


_VIOLATIONS = """
WITH audit AS (
    SELECT run_id AS anchor, inline, created_at, inline->>'op' AS op FROM app.artifacts WHERE step_id = 'OPS'
), named AS (
    SELECT a.anchor, a.op, a.created_at, id.value AS workflow_id
    FROM audit a
    CROSS JOIN LATERAL jsonb_array_elements_text(CASE
        WHEN a.op = 'cancel' AND jsonb_typeof(a.inline->'canceledWorkflowIDs') = 'array'
            THEN a.inline->'canceledWorkflowIDs'
        WHEN a.op = 'resume' AND jsonb_typeof(a.inline->'resumedWorkflowIDs') = 'array'
            THEN a.inline->'resumedWorkflowIDs'
        ELSE '[]'::jsonb END) AS id(value)
)
SELECT 'cancel_not_applied' AS kind, n.anchor, n.workflow_id, w.status
FROM named n LEFT JOIN dbos.workflow_status w ON w.workflow_uuid = n.workflow_id
WHERE n.op = 'cancel' AND w.status IS DISTINCT FROM 'CANCELLED'
  AND NOT EXISTS (SELECT 1 FROM named r WHERE r.op = 'resume' AND r.workflow_id = n.workflow_id
                  AND r.created_at > n.created_at)
UNION ALL
SELECT 'resume_not_applied', n.anchor, n.workflow_id, w.status
FROM named n LEFT JOIN dbos.workflow_status w ON w.workflow_uuid = n.workflow_id
WHERE n.op = 'resume' AND (w.status IS NULL OR w.status = 'CANCELLED')
  AND NOT EXISTS (SELECT 1 FROM named c WHERE c.op = 'cancel' AND c.workflow_id = n.workflow_id
                  AND c.created_at > n.created_at)
UNION ALL
SELECT 'fork_not_applied', a.anchor, a.inline->>'forkedWorkflowID', NULL
FROM audit a
WHERE a.op = 'fork' AND NOT EXISTS (SELECT 1 FROM dbos.workflow_status w
                                    WHERE w.workflow_uuid = a.inline->>'forkedWorkflowID')
UNION ALL
SELECT 'fork_not_audited', NULL, w.workflow_uuid, w.status
FROM dbos.workflow_status w
WHERE w.forked_from IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM audit a WHERE a.op = 'fork' AND a.inline->>'forkedWorkflowID' = w.workflow_uuid)
ORDER BY 1, 3
"""


def violations(conn: sa.Connection) -> list[OpsViolation]:
    """OPS audit rows whose DBOS change is not there (a cancel, resume or fork the audit names but DBOS does not
    show, and no later audited action explains), and forks DBOS shows without their audit row. Empty when the
    audit and DBOS agree. (A CANCELLED workflow without a cancel audit is not one: DBOS's own timeouts cancel.)"""
    rows = conn.execute(sql(_VIOLATIONS))
    return [OpsViolation(**dict(row._mapping)) for row in rows]
