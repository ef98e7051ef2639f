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
        sa.text(
            "SELECT run_id AS anchor, task_key, inline, created_at FROM app.artifacts "
            "WHERE step_id = 'OPS' AND run_id = ANY(:a) AND (CAST(:op AS text) IS NULL OR inline->>'op' = :op) "
            "ORDER BY created_at DESC, task_key LIMIT :n"
        ),
        {"a": list(anchors), "op": op, "n": limit},
    )
    return [AuditRow(**dict(row._mapping)) for row in rows]


def count(conn: sa.Connection) -> int:
    return int(conn.execute(sa.text("SELECT count(*) FROM app.artifacts WHERE step_id = 'OPS'")).scalar_one())
