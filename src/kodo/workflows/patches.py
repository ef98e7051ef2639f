"""Reversible patches inside a run's workspace (``$KODO_HOME/workspaces/<runId>``).

Apply: record pre/postimage in ``app.patch_history`` once; if the file already holds the postimage the
patch counts as applied (a replay); if it holds neither image → ``PREIMAGE_MISMATCH``. Rollback is the
mirror image. A target outside the workspace → ``PATCH_PATH_NOT_ALLOWED``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kodo.errors import StepFailure
from kodo.identity import sha256_hex
from kodo.store import patches


def prepare_workspace(workspace: Path, repo: Path | None) -> None:
    """Create the workspace; start it as a clone of ``repo`` (checked by ``kodo.workflows.repositories``)."""
    if workspace.exists():
        return
    workspace.parent.mkdir(parents=True, exist_ok=True)
    if repo is not None:
        staging = workspace.with_name(workspace.name + ".cloning")
        subprocess.run(["rm", "-rf", str(staging)], check=True)
        subprocess.run(
            ["git", "clone", "--quiet", "--local", "--no-hardlinks", "--", str(repo), str(staging)],
            check=True,
            timeout=120,
        )
        staging.rename(workspace)
    else:
        workspace.mkdir(parents=True, exist_ok=True)


def resolve_target(workspace: Path, target: str) -> Path:
    root = workspace.resolve()
    path = (root / target).resolve()
    if path != root and root not in path.parents:
        raise StepFailure("PATCH_PATH_NOT_ALLOWED", f"PATCH_PATH_NOT_ALLOWED:{target}")
    if path == root:
        raise StepFailure("PATCH_PATH_NOT_ALLOWED", f"PATCH_PATH_NOT_ALLOWED:{target}")
    return path


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def apply(conn: sa.Connection, *, run_id: str, workspace: Path, index: int, item: dict[str, Any]) -> dict[str, Any]:
    """Apply one patch-plan item; returns its ``patch_apply`` artifact payload."""
    target = str(item["targetPath"])
    path = resolve_target(workspace, target)
    postimage = str(item["postimageContent"])
    current = _read(path)
    record = patches.ensure(
        conn,
        {
            "run_id": run_id,
            "step_id": "ApplyPatchST",
            "patch_index": index,
            "target_path": target,
            "preimage_hash": sha256_hex(current),
            "postimage_hash": sha256_hex(postimage),
            "diff_hash": sha256_hex(str(item.get("diffText", ""))),
            "preimage_content": current,
            "postimage_content": postimage,
        },
    )
    current_hash = sha256_hex(_read(path))
    if current_hash != record.postimage_hash:
        if current_hash != record.preimage_hash:
            raise StepFailure("PREIMAGE_MISMATCH", f"PREIMAGE_MISMATCH:{target}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(record.postimage_content, encoding="utf-8")
    if record.rolled_back_at is not None:
        patches.reopen(conn, run_id=run_id, step_id="ApplyPatchST", patch_index=index)
    else:
        patches.mark(conn, run_id=run_id, step_id="ApplyPatchST", patch_index=index, column="applied_at")
    return {
        "patchIndex": index,
        "targetPath": target,
        "preimageHash": record.preimage_hash,
        "postimageHash": record.postimage_hash,
        "diffHash": record.diff_hash,
    }


def rollback_all(conn: sa.Connection, *, run_id: str, workspace: Path) -> int:
    """Restore preimages of applied, not yet rolled-back patches in reverse order; returns how many."""
    restored = 0
    for record in reversed(patches.list_for_run(conn, run_id, "ApplyPatchST")):
        if record.applied_at is None or record.rolled_back_at is not None:
            continue
        path = resolve_target(workspace, record.target_path)
        current_hash = sha256_hex(_read(path))
        if current_hash != record.preimage_hash:
            if current_hash != record.postimage_hash:
                raise StepFailure("POSTIMAGE_MISMATCH", f"POSTIMAGE_MISMATCH:{record.target_path}")
            path.write_text(record.preimage_content, encoding="utf-8")
        patches.mark(
            conn,
            run_id=run_id,
            step_id="ApplyPatchST",
            patch_index=record.patch_index,
            column="rolled_back_at",
        )
        restored += 1
    return restored
