"""``app.patch_history``: the reversible patch ledger (preimage/postimage per patch)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True, slots=True, kw_only=True)
class PatchRecord:
    run_id: str
    step_id: str
    patch_index: int
    target_path: str
    preimage_hash: str
    postimage_hash: str
    diff_hash: str
    preimage_content: str
    postimage_content: str
    applied_at: datetime | None
    rolled_back_at: datetime | None
    created_at: datetime


def _row_to_patch(row: sa.Row[Any]) -> PatchRecord:
    return PatchRecord(**dict(row._mapping))


def ensure(conn: sa.Connection, record: dict[str, Any]) -> PatchRecord:
    """Insert the ledger row for a patch (once) and return what is recorded."""
    conn.execute(
        sa.text(
            "INSERT INTO app.patch_history (run_id, step_id, patch_index, target_path, preimage_hash, "
            "postimage_hash, diff_hash, preimage_content, postimage_content) VALUES (:run_id, :step_id, "
            ":patch_index, :target_path, :preimage_hash, :postimage_hash, :diff_hash, :preimage_content, "
            ":postimage_content) ON CONFLICT DO NOTHING"
        ),
        record,
    )
    row = conn.execute(
        sa.text(
            "SELECT * FROM app.patch_history WHERE run_id=:run_id AND step_id=:step_id AND patch_index=:patch_index"
        ),
        record,
    ).one()
    return _row_to_patch(row)


def mark(conn: sa.Connection, *, run_id: str, step_id: str, patch_index: int, column: str) -> None:
    if column not in {"applied_at", "rolled_back_at"}:
        raise ValueError(column)
    conn.execute(
        sa.text(
            f"UPDATE app.patch_history SET {column} = coalesce({column}, clock_timestamp()) "
            "WHERE run_id=:r AND step_id=:s AND patch_index=:i"
        ),
        {"r": run_id, "s": step_id, "i": patch_index},
    )


def list_for_run(conn: sa.Connection, run_id: str, step_id: str | None = None) -> list[PatchRecord]:
    rows = conn.execute(
        sa.text(
            "SELECT * FROM app.patch_history WHERE run_id = :r AND (CAST(:s AS text) IS NULL OR step_id = :s) "
            "ORDER BY step_id, patch_index"
        ),
        {"r": run_id, "s": step_id},
    )
    return [_row_to_patch(row) for row in rows]


def reopen(conn: sa.Connection, *, run_id: str, step_id: str, patch_index: int) -> None:
    """Mark a rolled-back patch as applied again (a repair re-applies it)."""
    conn.execute(
        sa.text(
            "UPDATE app.patch_history SET applied_at = clock_timestamp(), rolled_back_at = NULL "
            "WHERE run_id=:r AND step_id=:s AND patch_index=:i"
        ),
        {"r": run_id, "s": step_id, "i": patch_index},
    )
