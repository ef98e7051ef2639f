"""The write-ahead patch ledger: failing items roll back the ones before them, rollbacks restore exact bytes
and modes and delete created files, and the workspace-vs-ledger invariant sees a planted violation."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from git_repos import seeded_repo
from helpers import make_settings, wait_status, wait_until
from kodo import faults
from kodo.settings import Settings
from kodo.store import oracles, patches

TERMINAL = {"SUCCESS", "ERROR", "CANCELLED"}
ORIGINAL = b"line one\nline two\n"
BINARY = bytes(range(256)) + b"\xff\xfe\x00not utf-8\x80"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """This module's runs clone repositories made under the test's tmp dir: that is their KODO_REPO_ROOTS."""
    return make_settings(database_url, tmp_path / "home", KODO_REPO_ROOTS=str(tmp_path))


def make_repo(path: Path) -> Path:
    """A git repository with a text file, a binary executable and a sub-directory."""
    files = {"a.txt": ORIGINAL, "blob.bin": BINARY, "sub/keep.txt": "keep\n"}
    return seeded_repo(path, files, executables=("blob.bin",))


def run_with(client: TestClient, repo: Path, plan: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    body = {"goal": "patch", "inputs": {"repo": str(repo)}, "constraints": {"patchPlan": plan}}
    created = client.post("/api/intents", json=body)
    assert created.status_code == 201, created.text
    intent = str(created.json()["intentId"])
    started = client.post("/api/runs", json={"intentId": intent, "queuePartitionKey": "tenant-a", **fields})
    assert started.status_code in {200, 201}, started.text
    return {"intent": intent, "runId": started.json()["runId"]}


def item(target: str, content: str) -> dict[str, Any]:
    return {"targetPath": target, "postimageContent": content, "diffText": f"+{content}"}


def ledger(engine: sa.Engine, run_id: str) -> list[patches.PatchRecord]:
    with engine.connect() as conn:
        return patches.list_for_run(conn, run_id)


def test_a_failing_third_item_restores_the_first_two(
    client: TestClient, settings: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    """Items 1 and 2 are written, item 3 cannot be (its target is a directory): 1 is restored byte for byte,
    2 (a file the run created) is deleted, both are marked rolled back, and the run fails PATCH_WRITE_FAILED."""
    repo = make_repo(tmp_path / "repo")
    plan = [item("a.txt", "patched\n"), item("new/created.txt", "fresh\n"), item("sub", "not a file")]
    run = run_with(client, repo, plan, autoApprove=True)
    done = wait_status(client, run["intent"], TERMINAL)
    assert done["status"] == "ERROR" and done["error"]["code"] == "PATCH_WRITE_FAILED", done
    workspace = settings.workspaces_dir / run["runId"]
    assert (workspace / "a.txt").read_bytes() == ORIGINAL
    assert not (workspace / "new" / "created.txt").exists()
    assert (workspace / "sub" / "keep.txt").read_text() == "keep\n"
    rows = ledger(engine, run["runId"])
    assert [(r.patch_index, r.state) for r in rows] == [(0, "rolled_back"), (1, "rolled_back")]
    assert rows[1].preimage_existed is False and rows[1].preimage_hash == patches.ABSENT
    with engine.connect() as conn:
        assert patches.workspace_violations(conn, settings.workspaces_dir, run["runId"]) == []


def test_a_binary_file_round_trips_through_patch_and_rollback(
    client: TestClient, settings: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    """A non-UTF-8 executable is overwritten by a patch, and the plan's rejection restores its exact bytes
    and mode; the ledger holds those bytes; a created file is deleted rather than left empty."""
    repo = make_repo(tmp_path / "repo")
    run = run_with(client, repo, [item("blob.bin", "now text\n"), item("made.txt", "made\n")])
    wait_status(client, run["intent"], {"WAITING_INPUT"})
    workspace = settings.workspaces_dir / run["runId"]
    assert (workspace / "blob.bin").read_bytes() == b"now text\n"
    assert stat.S_IMODE((workspace / "blob.bin").stat().st_mode) == 0o755
    rows = ledger(engine, run["runId"])
    assert [r.state for r in rows] == ["applied", "applied"]
    assert rows[0].preimage_bytes == BINARY and rows[0].preimage_mode == 0o755
    gate = client.get(f"/api/runs/{run['intent']}/gates").json()[0]
    answer = {"payload": {"choice": "no", "rationale": "keep it"}, "dedupeKey": "po-1", "origin": "manual"}
    assert client.post(f"/api/runs/{run['intent']}/gates/{gate['gateKey']}/reply", json=answer).status_code == 200
    assert wait_status(client, run["intent"], TERMINAL)["error"]["code"] == "PLAN_REJECTED"
    assert (workspace / "blob.bin").read_bytes() == BINARY
    assert stat.S_IMODE((workspace / "blob.bin").stat().st_mode) == 0o755
    assert not (workspace / "made.txt").exists()
    assert [r.state for r in ledger(engine, run["runId"])] == ["rolled_back", "rolled_back"]
    panel = client.get(f"/ui/runs/{run['intent']}/panel")  # the run page says which, too
    assert panel.status_code == 200 and panel.text.count("<td>rolled_back</td>") == 2


def test_the_workspace_invariant_reports_a_planted_violation(
    client: TestClient, settings: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    """Disk and ledger agree after a patched run; a file changed behind the ledger's back (or deleted) is
    reported with the hash found, and a pending row allows either of its images."""
    repo = make_repo(tmp_path / "repo")
    run = run_with(client, repo, [item("a.txt", "patched\n")], autoApprove=True)
    assert wait_status(client, run["intent"], TERMINAL)["status"] == "SUCCESS"
    workspace = settings.workspaces_dir / run["runId"]
    with engine.connect() as conn:
        assert patches.workspace_violations(conn, settings.workspaces_dir) == []
    (workspace / "a.txt").write_bytes(ORIGINAL)  # the original again, although the ledger says applied
    with engine.connect() as conn:
        (found,) = patches.workspace_violations(conn, settings.workspaces_dir)
    assert (found.run_id, found.target_path, found.states) == (run["runId"], "a.txt", ("applied",))
    assert found.found == patches.content_hash(ORIGINAL) and found.allowed == (patches.content_hash(b"patched\n"),)
    with engine.connect() as conn:  # the oracle registry reports it when given the workspaces
        assert oracles.WORKSPACE_CHECK not in oracles.violations(conn)
        (row,) = oracles.violations(conn, workspaces_dir=settings.workspaces_dir)[oracles.WORKSPACE_CHECK]
    assert row[:2] == (run["runId"], "a.txt")
    with engine.begin() as conn:  # pending (a crash mid-step): the original is one of the allowed images
        conn.execute(sa.text("UPDATE app.patch_history SET applied_at = NULL WHERE run_id = :r"), {"r": run["runId"]})
        assert patches.workspace_violations(conn, settings.workspaces_dir) == []
    os.unlink(workspace / "a.txt")
    with engine.connect() as conn:
        (missing,) = patches.workspace_violations(conn, settings.workspaces_dir, run["runId"])
    assert missing.found == patches.ABSENT and missing.states == ("pending",)


def test_an_unexpected_error_after_a_write_restores_the_items_written(
    client: TestClient, settings: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    """Any error (here the fault point after the 2nd write, armed to raise) restores both items first: the
    workspace is the original and both rows say rolled_back, whatever becomes of the run."""
    repo = make_repo(tmp_path / "repo")
    faults.arm("patch.after_write:raise:2")
    try:
        run = run_with(client, repo, [item("a.txt", "patched\n"), item("b.txt", "new\n")], autoApprove=True)
        wait_until(lambda: len(ledger(engine, run["runId"])) == 2, what="two ledger rows")
        wait_until(lambda: [r.state for r in ledger(engine, run["runId"])] == ["rolled_back"] * 2, what="rollback")
    finally:
        faults.arm(None)
    workspace = settings.workspaces_dir / run["runId"]
    assert (workspace / "a.txt").read_bytes() == ORIGINAL and not (workspace / "b.txt").exists()
    with engine.connect() as conn:
        assert patches.workspace_violations(conn, settings.workspaces_dir, run["runId"]) == []
