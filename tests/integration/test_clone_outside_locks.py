"""The workspace clone happens outside the run's row lock: an approval and a cancel of a run that is still
cloning answer while the clone is held, and the cancel wins (the run never starts)."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import make_settings, wait_status, wait_until
from kodo.settings import Settings

GATED_GIT = """#!/bin/sh
# Real git; a clone first waits until the test creates $CLONE_GATE/release (so the clone is "slow" for as
# long as the test needs, with no timing involved).
if [ "$1" = "clone" ]; then
  echo "$@" > "$CLONE_GATE/cloning"
  while [ ! -e "$CLONE_GATE/release" ]; do sleep 0.02; done
fi
exec {git} "$@"
"""


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """This module's runs clone repositories made under the test's tmp dir: that is their KODO_REPO_ROOTS."""
    return make_settings(database_url, tmp_path / "home", KODO_REPO_ROOTS=str(tmp_path))


def lock_waiters(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        return int(conn.execute(sa.text(query)).scalar_one())


def test_approve_and_cancel_answer_while_the_clone_is_held(
    client: TestClient, settings: Settings, engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the clone blocked, approve-plan (a 409: the run is not at its plan gate) and an ops cancel both
    answer, nobody waits on a lock; after the clone is released the run stays cancelled and runs no step."""
    real_git = subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True, check=True).stdout
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.txt").write_text("a\n")
    for args in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=k", "-c", "user.email=k@x.invalid", "commit", "-qm", "a"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, timeout=30)
    gate, bin_dir = tmp_path / "gate", tmp_path / "bin"
    gate.mkdir()
    bin_dir.mkdir()
    (bin_dir / "git").write_text(GATED_GIT.format(git=real_git.strip()))
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("CLONE_GATE", str(gate))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    body = {"goal": "slow clone", "inputs": {"repo": str(repo)}, "constraints": {}}
    intent = client.post("/api/intents", json=body).json()["intentId"]
    run = client.post("/api/runs", json={"intentId": intent, "queuePartitionKey": "p"}).json()
    wait_until(lambda: (gate / "cloning").exists(), timeout=60, what="the clone to start")
    try:
        with ThreadPoolExecutor(2) as pool:
            approval = pool.submit(client.post, f"/api/runs/{intent}/approve-plan", json={"approvedBy": "po"})
            cancel = pool.submit(client.post, f"/api/ops/wf/{intent}/cancel", json={"actor": "qa", "reason": "stop"})
            approved, cancelled = approval.result(timeout=60), cancel.result(timeout=60)
        assert not (gate / "release").exists()  # both answered while the clone was still held
        assert "--no-hardlinks" in (gate / "cloning").read_text() and " -- " in (gate / "cloning").read_text()
        # Not at its plan gate yet (or already cancelled): refused at once, not held behind the clone.
        assert approved.status_code == 409, approved.text
        assert cancelled.status_code == 202 and cancelled.json()["runId"] == run["runId"], cancelled.text
        assert lock_waiters(engine) == 0
    finally:
        (gate / "release").touch()
    header = wait_status(client, intent, {"CANCELLED"})
    assert header["status"] == "CANCELLED"
    with engine.connect() as conn:
        steps = conn.execute(sa.text("SELECT count(*) FROM app.run_steps WHERE run_id = :r"), {"r": run["runId"]})
        assert steps.scalar_one() == 0


def test_a_failed_clone_fails_the_run_and_a_retry_clones_again(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    """A repository git cannot clone fails the run WORKSPACE_CLONE_FAILED + REPAIR with no workspace left
    behind (no empty stand-in); once the repository is fixed, a retry clones it and the run succeeds."""
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)  # looks like a repository, is not one
    body = {"goal": "broken clone", "inputs": {"repo": str(repo)}, "constraints": {}}
    intent = client.post("/api/intents", json=body).json()["intentId"]
    run = client.post("/api/runs", json={"intentId": intent, "queuePartitionKey": "p", "autoApprove": True}).json()
    failed = wait_status(client, intent, {"SUCCESS", "ERROR", "CANCELLED"})
    assert failed["status"] == "ERROR" and failed["error"]["code"] == "WORKSPACE_CLONE_FAILED", failed
    assert failed["nextAction"] == "REPAIR"
    workspace = settings.workspaces_dir / run["runId"]
    assert not workspace.exists()
    (repo / ".git").rmdir()
    (repo / "a.txt").write_text("cloned\n")
    for args in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=k", "-c", "user.email=k@x.invalid", "commit", "-qm", "a"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, timeout=30)
    assert client.post(f"/runs/{intent}/retry").status_code == 202
    assert wait_status(client, intent, {"SUCCESS", "ERROR", "CANCELLED"}, timeout=60)["status"] == "SUCCESS"
    assert (workspace / "a.txt").read_text() == "cloned\n"
