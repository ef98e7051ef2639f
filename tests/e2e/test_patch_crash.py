"""kill -9 of a real ``kodo up`` in the middle of a patch plan (fault points armed by env): recovery first
restores the original workspace, then patches it again; it never stays mixed and the ledger says which."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import sqlalchemy as sa

from git_repos import seeded_repo
from helpers import wait_until
from kodo.store import patches
from processes import KodoProcess

ORIGINAL = b"original \xff\xfe bytes\n"


def states(engine: sa.Engine, run_id: str) -> list[str]:
    with engine.connect() as conn:
        return [r.state for r in patches.list_for_run(conn, run_id)]


def test_kill_9_after_a_patch_write_recovers_to_the_original_then_patches(
    spawn: Callable[..., KodoProcess], engine: sa.Engine, tmp_path: Path
) -> None:
    """Killed after the 2nd write (before the step's commit): both rows pending, disk patched. Killed again on
    recovery before its first write: the original bytes are back and the created file is gone. A clean
    restart then finishes the run fully patched, rows applied, disk equal to the ledger."""
    repo = seeded_repo(tmp_path / "repo", {"a.txt": ORIGINAL})
    up = spawn("up", KODO_REPO_ROOTS=str(tmp_path), KODO_FAULT_POINTS="patch.after_write:kill:2")
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    plan = [
        {"targetPath": "a.txt", "postimageContent": "patched\n", "diffText": "+patched"},
        {"targetPath": "made/new.txt", "postimageContent": "new\n", "diffText": "+new"},
    ]
    body = {"goal": "patch", "inputs": {"repo": str(repo)}, "constraints": {"patchPlan": plan}}
    intent = httpx.post(f"{base}/api/intents", json=body, timeout=30).json()["intentId"]
    started = httpx.post(
        f"{base}/api/runs", json={"intentId": intent, "queuePartitionKey": "p", "autoApprove": True}, timeout=30
    )
    assert started.status_code == 201, started.text
    run_id = started.json()["runId"]
    up.wait_killed()
    workspace = Path(up.env["KODO_HOME"]) / "workspaces" / run_id
    assert states(engine, run_id) == ["pending", "pending"]
    assert (workspace / "a.txt").read_bytes() == b"patched\n" and (workspace / "made/new.txt").exists()

    up.restart_until_killed("patch.before_write:kill")
    assert (workspace / "a.txt").read_bytes() == ORIGINAL
    assert not (workspace / "made/new.txt").exists()
    assert states(engine, run_id) == ["pending", "rolled_back"]  # item 0 recorded again, not yet written

    up.restart_unarmed()
    wait_until(
        lambda: httpx.get(f"{base}/api/runs/{intent}", timeout=30).json()["status"] == "SUCCESS",
        timeout=90,
        what="the run to succeed after recovery",
    )
    assert (workspace / "a.txt").read_bytes() == b"patched\n"
    assert (workspace / "made/new.txt").read_bytes() == b"new\n"
    assert states(engine, run_id) == ["applied", "applied"]
    with engine.connect() as conn:
        assert patches.workspace_violations(conn, workspace.parent, run_id) == []
        record = patches.list_for_run(conn, run_id)[0]
    assert record.preimage == ORIGINAL  # the preimage recorded on recovery is the original, not the postimage


def test_kill_9_before_the_clone_leaves_no_workspace_and_the_restart_clones(
    spawn: Callable[..., KodoProcess], engine: sa.Engine, tmp_path: Path
) -> None:
    """Killed as the clone starts (outside any transaction): no workspace and no run step exist; the restarted
    process clones the repository and the run succeeds with its patch applied to the clone."""
    repo = seeded_repo(tmp_path / "repo", {"a.txt": ORIGINAL})
    up = spawn("up", KODO_REPO_ROOTS=str(tmp_path), KODO_FAULT_POINTS="workspace.before_clone:kill")
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    plan = [{"targetPath": "a.txt", "postimageContent": "patched\n", "diffText": "+patched"}]
    body = {"goal": "clone", "inputs": {"repo": str(repo)}, "constraints": {"patchPlan": plan}}
    intent = httpx.post(f"{base}/api/intents", json=body, timeout=30).json()["intentId"]
    started = httpx.post(
        f"{base}/api/runs", json={"intentId": intent, "queuePartitionKey": "p", "autoApprove": True}, timeout=30
    )
    run_id = started.json()["runId"]
    up.wait_killed()
    workspace = Path(up.env["KODO_HOME"]) / "workspaces" / run_id
    assert not workspace.exists()
    with engine.connect() as conn:
        steps = conn.execute(sa.text("SELECT count(*) FROM app.run_steps WHERE run_id = :r"), {"r": run_id})
        assert steps.scalar_one() == 0

    up.restart_unarmed()
    wait_until(
        lambda: httpx.get(f"{base}/api/runs/{intent}", timeout=30).json()["status"] == "SUCCESS",
        timeout=90,
        what="the run to succeed after the restart",
    )
    assert (workspace / "a.txt").read_bytes() == b"patched\n" and (workspace / ".git").is_dir()
    assert (repo / "a.txt").read_bytes() == ORIGINAL  # the source is never touched
