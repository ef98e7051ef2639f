"""Raw rows of one run, across ``app.*`` and its DBOS workflows, for repro packs and proof cards."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from kodo.store.statements import sql

# table → (query for one run, deterministic order)
RUN_TABLES: dict[str, str] = {
    "runSteps": "SELECT * FROM app.run_steps WHERE run_id = :r ORDER BY step_id, attempt",
    "artifacts": "SELECT * FROM app.artifacts WHERE run_id = :r ORDER BY step_id, task_key, idx, attempt",
    "sbxRuns": "SELECT * FROM app.sbx_runs WHERE run_id = :r ORDER BY task_key, attempt",
    "opencodeCalls": "SELECT * FROM app.opencode_calls WHERE run_id = :r ORDER BY created_at, id",
    "humanGates": "SELECT * FROM app.human_gates WHERE run_id = :r ORDER BY created_at, gate_key",
    "humanInteractions": "SELECT * FROM app.human_interactions WHERE run_id = :r ORDER BY created_at, dedupe_key",
    "receipts": "SELECT * FROM app.mock_receipts WHERE run_id = :r ORDER BY step_id, receipt_key",
    "repairs": "SELECT * FROM app.repairs WHERE run_id = :r ORDER BY attempt",
    "patchHistory": (
        "SELECT run_id, step_id, patch_index, target_path, preimage_hash, postimage_hash, diff_hash, applied_at, "
        "rolled_back_at, created_at FROM app.patch_history WHERE run_id = :r ORDER BY step_id, patch_index"
    ),
}


def plain(value: Any) -> Any:
    """A JSON-ready copy: datetimes as ISO text, UUIDs and decimals as text/numbers."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    return value


def _rows(conn: sa.Connection, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [plain(dict(row._mapping)) for row in conn.execute(sql(query), params)]


def run_row(conn: sa.Connection, run_id: str) -> dict[str, Any] | None:
    rows = _rows(conn, "SELECT * FROM app.runs WHERE id = :r", {"r": run_id})
    return rows[0] if rows else None


def intent_row(conn: sa.Connection, intent_id: str) -> dict[str, Any] | None:
    rows = _rows(conn, "SELECT * FROM app.intents WHERE id = :i", {"i": intent_id})
    return rows[0] if rows else None


def run_tables(conn: sa.Connection, run_id: str) -> dict[str, list[dict[str, Any]]]:
    return {name: _rows(conn, query, {"r": run_id}) for name, query in RUN_TABLES.items()}


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def workflow_scope(conn: sa.Connection, workflow_id: str) -> list[dict[str, Any]]:
    """The run's DBOS workflows: its phases (``<wid>``, ``<wid>:<gate>``, ``repair:<wid>:<n>``), escalations
    (``esc:<wid>:<gate>``) and every descendant by ``parent_workflow_id``, oldest first."""
    like = _like(workflow_id)
    return _rows(
        conn,
        "WITH RECURSIVE scope(id) AS ("
        "SELECT workflow_uuid FROM dbos.workflow_status WHERE workflow_uuid = :w OR workflow_uuid LIKE :phase "
        "OR workflow_uuid LIKE :repair OR workflow_uuid LIKE :esc "
        "UNION SELECT ws.workflow_uuid FROM dbos.workflow_status ws JOIN scope s ON ws.parent_workflow_id = s.id) "
        "SELECT ws.workflow_uuid AS workflow_id, ws.status, ws.name, ws.queue_name, ws.queue_partition_key, "
        "ws.priority, ws.application_version, ws.executor_id, ws.parent_workflow_id, ws.forked_from, "
        "ws.recovery_attempts, ws.created_at, ws.updated_at, ws.started_at_epoch_ms, ws.completed_at "
        "FROM dbos.workflow_status ws JOIN scope s ON s.id = ws.workflow_uuid ORDER BY ws.created_at, ws.workflow_uuid",
        {"w": workflow_id, "phase": f"{like}:%", "repair": f"repair:{like}:%", "esc": f"esc:{like}:%"},
    )


def operations(conn: sa.Connection, workflow_ids: list[str]) -> list[dict[str, Any]]:
    """DBOS checkpoints (no payloads) of the given workflows."""
    return _rows(
        conn,
        "SELECT workflow_uuid AS workflow_id, function_id, function_name, child_workflow_id, started_at_epoch_ms, "
        "completed_at_epoch_ms, error IS NOT NULL AS failed FROM dbos.operation_outputs "
        "WHERE workflow_uuid = ANY(:w) ORDER BY workflow_uuid, function_id",
        {"w": workflow_ids},
    )


def events(conn: sa.Connection, workflow_ids: list[str]) -> list[dict[str, Any]]:
    return _rows(
        conn,
        "SELECT workflow_uuid AS workflow_id, key, value FROM dbos.workflow_events "
        "WHERE workflow_uuid = ANY(:w) ORDER BY workflow_uuid, key",
        {"w": workflow_ids},
    )
