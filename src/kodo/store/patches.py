"""``app.patch_history``: the write-ahead patch ledger (exact preimage and postimage per patch).

A row's state: ``pending`` (preimage recorded, the file may hold either image: the write and the step's
commit are not one thing), ``applied`` (marked with the step's checkpoint) or ``rolled_back``. Hashes are
SHA-256 of the file's bytes, or ``absent`` for a file that did not exist.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kodo.store.statements import sql

ABSENT = "absent"
APPLY_STEP = "ApplyPatchST"


def content_hash(content: bytes | None) -> str:
    """SHA-256 of a file's bytes; ``absent`` when there is no file (``None``)."""
    return ABSENT if content is None else hashlib.sha256(content).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class PatchImage:
    """What is recorded before a file is touched: where, what it was, what it will be."""

    run_id: str
    patch_index: int
    target_path: str
    preimage: bytes | None  # None: the file did not exist
    preimage_mode: int | None
    postimage: bytes | None  # None: the file is deleted (a sandbox removed it)
    diff_hash: str
    # ApplyPatchST (a patch plan) or ExecuteST (files a sandbox changed: kodo.workflows.patches.apply_files).
    step_id: str = APPLY_STEP


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
    preimage_bytes: bytes | None
    postimage_bytes: bytes | None
    preimage_mode: int | None
    preimage_existed: bool
    applied_at: datetime | None
    rolled_back_at: datetime | None
    created_at: datetime

    @property
    def state(self) -> str:
        """``rolled_back`` | ``applied`` | ``pending``."""
        if self.rolled_back_at is not None:
            return "rolled_back"
        return "applied" if self.applied_at is not None else "pending"

    @property
    def preimage(self) -> bytes | None:
        """The exact bytes to restore (``None``: delete the file); rows older than 0008 kept only text."""
        if not self.preimage_existed:
            return None
        return self.preimage_bytes if self.preimage_bytes is not None else self.preimage_content.encode("utf-8")


def _row_to_patch(row: sa.Row[Any]) -> PatchRecord:
    values = dict(row._mapping)
    for name in ("preimage_bytes", "postimage_bytes"):
        if values[name] is not None:
            values[name] = bytes(values[name])
    return PatchRecord(**values)


def _text(content: bytes | None) -> str:
    """The readable rendering kept in the text columns: empty for no file and for binary content (the bytes
    columns are the record)."""
    if content is None or b"\x00" in content:
        return ""
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return ""


def record(conn: sa.Connection, image: PatchImage) -> PatchRecord:
    """Record (or record again, for a re-apply) a patch's images as ``pending``; the caller commits this
    *before* touching the file."""
    row = conn.execute(
        sql(
            "INSERT INTO app.patch_history (run_id, step_id, patch_index, target_path, preimage_hash, postimage_hash, "
            "diff_hash, preimage_content, postimage_content, preimage_bytes, postimage_bytes, preimage_mode, "
            "preimage_existed) VALUES (:run_id, :step_id, :patch_index, :target_path, :preimage_hash, "
            ":postimage_hash, :diff_hash, :preimage_content, :postimage_content, :preimage_bytes, :postimage_bytes, "
            ":preimage_mode, :preimage_existed) "
            "ON CONFLICT (run_id, step_id, patch_index) DO UPDATE SET target_path = EXCLUDED.target_path, "
            "preimage_hash = EXCLUDED.preimage_hash, postimage_hash = EXCLUDED.postimage_hash, "
            "diff_hash = EXCLUDED.diff_hash, preimage_content = EXCLUDED.preimage_content, "
            "postimage_content = EXCLUDED.postimage_content, preimage_bytes = EXCLUDED.preimage_bytes, "
            "postimage_bytes = EXCLUDED.postimage_bytes, preimage_mode = EXCLUDED.preimage_mode, "
            "preimage_existed = EXCLUDED.preimage_existed, applied_at = NULL, rolled_back_at = NULL "
            "RETURNING *"
        ),
        {
            "run_id": image.run_id,
            "step_id": image.step_id,
            "patch_index": image.patch_index,
            "target_path": image.target_path,
            "preimage_hash": content_hash(image.preimage),
            "postimage_hash": content_hash(image.postimage),
            "diff_hash": image.diff_hash,
            "preimage_content": _text(image.preimage),
            "postimage_content": _text(image.postimage),
            "preimage_bytes": image.preimage,
            "postimage_bytes": image.postimage,
            "preimage_mode": image.preimage_mode,
            "preimage_existed": image.preimage is not None,
        },
    ).one()
    return _row_to_patch(row)


def mark(conn: sa.Connection, *, run_id: str, step_id: str, patch_index: int, column: str) -> None:
    if column not in {"applied_at", "rolled_back_at"}:
        raise ValueError(column)
    conn.execute(
        sql(
            f"UPDATE app.patch_history SET {column} = coalesce({column}, clock_timestamp()) "
            "WHERE run_id=:r AND step_id=:s AND patch_index=:i"
        ),
        {"r": run_id, "s": step_id, "i": patch_index},
    )


def list_for_run(conn: sa.Connection, run_id: str, step_id: str | None = None) -> list[PatchRecord]:
    rows = conn.execute(
        sql(
            "SELECT * FROM app.patch_history WHERE run_id = :r AND (CAST(:s AS text) IS NULL OR step_id = :s) "
            "ORDER BY step_id, patch_index"
        ),
        {"r": run_id, "s": step_id},
    )
    return [_row_to_patch(row) for row in rows]


# --- the invariant: the workspace agrees with its ledger -------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PatchViolation:
    """A workspace file whose hash is none of the ones its ledger rows allow."""

    run_id: str
    target_path: str
    states: tuple[str, ...]  # the states of the file's ledger rows, in patch order
    allowed: tuple[str, ...]
    found: str


def allowed_hashes(records: list[PatchRecord]) -> set[str]:
    """The hashes one file may have given its ledger rows (patch order): the newest applied postimage, else the
    original preimage; a pending row (a crash mid-step) also allows its own preimage and postimage."""
    applied = [r for r in records if r.state == "applied"]
    allowed = {applied[-1].postimage_hash} if applied else {records[0].preimage_hash}
    for pending in (r for r in records if r.state == "pending"):
        allowed |= {pending.preimage_hash, pending.postimage_hash}
    return allowed


def _current_hash(path: Path) -> str:
    return content_hash(path.read_bytes()) if path.is_file() else ABSENT


def workspace_violations(conn: sa.Connection, workspaces_dir: Path, run_id: str | None = None) -> list[PatchViolation]:
    """Every ledgered file (of ``run_id``, or of every run whose workspace is still on disk) whose bytes match
    neither the preimage nor the postimage its run's ledger state allows. Empty when disk and SQL agree.
    A file's rows are read in the order they were written: the patch plan's, then those of files a sandbox
    brought back (ExecuteST)."""
    rows = conn.execute(
        sql(
            "SELECT * FROM app.patch_history WHERE CAST(:r AS text) IS NULL OR run_id = :r "
            "ORDER BY run_id, target_path, step_id <> :s, patch_index"
        ),
        {"s": APPLY_STEP, "r": run_id},
    )
    by_file: dict[tuple[str, str], list[PatchRecord]] = {}
    for row in rows:
        record_ = _row_to_patch(row)
        by_file.setdefault((record_.run_id, record_.target_path), []).append(record_)
    found = []
    for (run, target), records in by_file.items():
        workspace = workspaces_dir / run
        if not workspace.is_dir():
            continue
        allowed = allowed_hashes(records)
        current = _current_hash(workspace / target)
        if current not in allowed:
            found.append(
                PatchViolation(
                    run_id=run,
                    target_path=target,
                    states=tuple(r.state for r in records),
                    allowed=tuple(sorted(allowed)),
                    found=current,
                )
            )
    return found
