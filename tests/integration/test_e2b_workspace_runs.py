"""Runs on SBX_PROVIDER=e2b (the real SDK against the loopback stand-in of E2B, ``tests/e2b_service.py``; real
workflow, real Postgres): files the
command changed in the sandbox land in the run's local workspace through the patch ledger (ExecuteST rows), a failed
run restores them, and a workspace over SBX_E2B_UPLOAD_MAX_MB fails the run WORKSPACE_TOO_LARGE with nothing run."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import git_repos
from e2b_service import E2BService, live_settings, running
from helpers import wait_status
from kodo.settings import Settings
from kodo.store import patches, sandbox_runs

ORIGINAL = "original\n"


@pytest.fixture
def sdk(tmp_path: Path) -> Iterator[E2BService]:
    """The stand-in of E2B on 127.0.0.1 for this test."""
    with running(tmp_path / "e2b") as service:
        yield service


@pytest.fixture
def settings(database_url: str, tmp_path: Path, sdk: E2BService) -> Settings:
    """Live sandboxes on E2B (the stand-in); the runs clone repositories under the test's tmp dir."""
    return live_settings(database_url, tmp_path, sdk, SBX_E2B_UPLOAD_MAX_MB="1")


def make_repo(path: Path, extra_bytes: int = 0) -> Path:
    path.mkdir()
    (path / "a.txt").write_text(ORIGINAL)
    if extra_bytes:
        (path / "big.bin").write_bytes(b"\x01" * extra_bytes)
    for args in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=kodo", "-c", "user.email=kodo@example.invalid", "commit", "-q", "-m", "seed"],
    ):
        subprocess.run(["git", *args], cwd=path, check=True, timeout=30)
    return path


def run(client: TestClient, repo: Path, command: str) -> dict[str, Any]:
    intent = {"goal": "e2b workspace", "inputs": {"repo": str(repo)}, "constraints": {"testCommand": command}}
    created = client.post("/api/intents", json=intent)
    assert created.status_code == 201, created.text
    wid = created.json()["intentId"]
    started = client.post("/api/runs", json={"intentId": wid, "queuePartitionKey": "e2b", "autoApprove": True})
    assert started.status_code == 201, started.text
    return wait_status(client, wid, {"SUCCESS", "ERROR", "CANCELLED"})


def rows(engine: sa.Engine, run_id: str) -> list[tuple[str, int, str, str]]:
    with engine.connect() as conn:
        return [(r.step_id, r.patch_index, r.target_path, r.state) for r in patches.list_for_run(conn, run_id)]


def test_changed_and_new_files_land_in_the_local_workspace_with_ledger_rows(
    client: TestClient, settings: Settings, engine: sa.Engine, tmp_path: Path, sdk: E2BService
) -> None:
    """The command ran in the uploaded workspace; a.txt (changed) and made/new.txt (created) are written locally
    under ExecuteST ledger rows, applied, and the workspace agrees with its ledger."""
    done = run(client, make_repo(tmp_path / "repo"), "echo changed > a.txt && mkdir -p made && echo new > made/new.txt")
    assert done["status"] == "SUCCESS", done
    workspace = settings.workspaces_dir / done["runId"]
    assert (workspace / "a.txt").read_text() == "changed\n" and (workspace / "made" / "new.txt").read_text() == "new\n"
    assert rows(engine, done["runId"]) == [
        ("ExecuteST", 0, "a.txt", "applied"),
        ("ExecuteST", 1, "made/new.txt", "applied"),
    ]
    assert next(cwd for _, cwd in sdk.calls.commands) == "/home/user/workspace"
    with engine.connect() as conn:
        assert patches.workspace_violations(conn, settings.workspaces_dir, done["runId"]) == []


def test_a_failed_run_restores_the_files_its_sandbox_changed(
    client: TestClient, settings: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    """The command changes a.txt, creates b.txt and exits 3: the run fails CMD_NONZERO and its rollback puts
    a.txt back byte for byte and deletes b.txt; the rows say rolled back."""
    done = run(client, make_repo(tmp_path / "repo"), "echo half > a.txt; echo x > b.txt; exit 3")
    assert done["status"] == "ERROR" and done["error"]["code"] == "CMD_NONZERO", done
    workspace = settings.workspaces_dir / done["runId"]
    assert (workspace / "a.txt").read_text() == ORIGINAL and not (workspace / "b.txt").exists()
    assert rows(engine, done["runId"]) == [
        ("ExecuteST", 0, "a.txt", "rolled_back"),
        ("ExecuteST", 1, "b.txt", "rolled_back"),
    ]


def test_a_file_deleted_in_the_sandbox_is_deleted_locally_through_the_ledger(
    client: TestClient, settings: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    """The command removes a.txt: the local copy is deleted under an ExecuteST row whose postimage is absent, and
    the workspace agrees with its ledger."""
    done = run(client, make_repo(tmp_path / "repo"), "rm a.txt")
    assert done["status"] == "SUCCESS", done
    assert not (settings.workspaces_dir / done["runId"] / "a.txt").exists()
    assert rows(engine, done["runId"]) == [("ExecuteST", 0, "a.txt", "applied")]
    with engine.connect() as conn:
        (row,) = patches.list_for_run(conn, done["runId"])
        assert (row.postimage_hash, row.preimage) == (patches.ABSENT, ORIGINAL.encode())
        assert patches.workspace_violations(conn, settings.workspaces_dir, done["runId"]) == []


def test_a_failed_run_brings_back_a_file_its_sandbox_deleted(
    client: TestClient, settings: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    """The command removes a.txt and exits 3: the run fails CMD_NONZERO and its rollback writes a.txt back."""
    done = run(client, make_repo(tmp_path / "repo"), "rm a.txt; exit 3")
    assert done["status"] == "ERROR" and done["error"]["code"] == "CMD_NONZERO", done
    assert (settings.workspaces_dir / done["runId"] / "a.txt").read_text() == ORIGINAL
    assert rows(engine, done["runId"]) == [("ExecuteST", 0, "a.txt", "rolled_back")]


def test_a_workspace_over_the_limit_fails_the_run_and_nothing_runs(
    client: TestClient, engine: sa.Engine, tmp_path: Path, sdk: E2BService
) -> None:
    """Over SBX_E2B_UPLOAD_MAX_MB (1 MB here): WORKSPACE_TOO_LARGE, once (not retried), no sandbox, no rows."""
    done = run(client, make_repo(tmp_path / "repo", extra_bytes=(1 << 20) + 1), "touch ran")
    assert done["status"] == "ERROR" and done["error"]["code"] == "WORKSPACE_TOO_LARGE", done
    assert (sdk.calls.created, sdk.calls.commands) == (0, [])
    assert rows(engine, done["runId"]) == []
    with engine.connect() as conn:
        attempts = [(row["attempt"], row["err_code"]) for row in sandbox_runs.list_for_run(conn, done["runId"])]
    assert attempts == [(1, "WORKSPACE_TOO_LARGE")]


def test_delivery_commits_the_reviewed_tree_not_what_the_sandbox_wrote(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    """The sandbox's files land in the workspace, but the delivered branch holds only the reviewed patch."""
    repo = git_repos.make_repo(tmp_path / "repo")
    command = f"{git_repos.TEST_COMMAND} && echo cache > made-by-tests.txt"
    constraints = {"testCommand": command, "patchPlan": git_repos.fix_plan(), "deliver": "branch"}
    intent = {"goal": "fix add", "inputs": {"repo": str(repo)}, "constraints": constraints}
    wid = client.post("/api/intents", json=intent).json()["intentId"]
    started = client.post("/api/runs", json={"intentId": wid, "queuePartitionKey": "e2b", "autoApprove": True})
    assert started.status_code == 201, started.text
    done = wait_status(client, wid, {"SUCCESS", "ERROR", "CANCELLED"})
    assert done["status"] == "SUCCESS", done
    assert (settings.workspaces_dir / done["runId"] / "made-by-tests.txt").read_text() == "cache\n"
    files = git_repos.git(repo, "ls-tree", "-r", "--name-only", f"kodo/{done['runId']}").split()
    assert "made-by-tests.txt" not in files and "calc.py" in files
    assert git_repos.git(repo, "show", f"kodo/{done['runId']}:calc.py") == git_repos.FIXED
