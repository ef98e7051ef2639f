"""What the approver reviews: the workspace's origin (source repository, base commit) recorded when it is
cloned, and the diff of the workspace against that base, written as an artifact of ApplyPatchST (kind
``diff``) in the step's own transaction — so every plan gate has the exact change it approves."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from kodo.adapters import workspace_git
from kodo.identity import artifact_uri
from kodo.models import NewArtifact
from kodo.store import patches, workspaces

DIFF_NAME = "workspace.diff"
DIFF_IDX = 1000  # after the patch_apply artifacts (0..n) and the "none" marker (999)


def diff_uri(run_id: str) -> str:
    return artifact_uri(run_id, "ApplyPatchST", "", DIFF_NAME)


def record_workspace(conn: sa.Connection, run_id: str, workspace: Path, repo: str | None) -> None:
    """Record where the workspace came from, once (its base commit is HEAD right after the clone)."""
    if workspaces.get(conn, run_id) is not None:
        return
    base = workspace_git.head(workspace)
    workspaces.record(conn, run_id=run_id, source_repo=repo if base else None, base_commit=base)


def diff_artifact(conn: sa.Connection, run_id: str, workspace: Path, attempt: int) -> NewArtifact | None:
    """The workspace's diff against its base (git), or the patch ledger's own diff when it is no clone;
    None when there is nothing to review (no clone and no patch)."""
    applied = [
        record
        for record in patches.list_for_run(conn, run_id, "ApplyPatchST")
        if record.applied_at is not None and record.rolled_back_at is None
    ]
    origin = workspaces.get(conn, run_id)
    base = origin.base_commit if origin else None
    if base:
        snap = workspace_git.snapshot(workspace, base, [record.target_path for record in applied])
        inline = {
            "text": snap.diff,
            "base": base,
            "tree": snap.tree,
            "sourceRepo": origin.source_repo if origin else None,
        }
    elif not applied:
        return None
    else:
        changes = [(r.target_path, r.preimage_content, r.postimage_content) for r in applied]
        inline = {"text": workspace_git.ledger_diff(changes), "base": None, "tree": None, "sourceRepo": None}
    return NewArtifact(
        step_id="ApplyPatchST", idx=DIFF_IDX, kind="diff", attempt=attempt, uri=diff_uri(run_id), inline=inline
    )
