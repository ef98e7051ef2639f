"""kill -9 of a real ``kodo up`` on SBX_PROVIDER=e2b (the SDK stand-in, shadowing ``e2b`` on PYTHONPATH) while
ExecuteST writes the files the sandbox changed into the local workspace: recovery restores the original, then
writes them again; the workspace never stays mixed, the ledger says which, and the command ran once."""

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
TESTS = Path(__file__).resolve().parents[1]
# ``import e2b`` in the kodo process returns the stand-in, its sandboxes' directories under $E2B_STANDIN_ROOT.
SHIM = f"""
import os
import sys
from pathlib import Path

sys.path.insert(0, {str(TESTS)!r})
import e2b_standin

e2b_standin.StandInSandbox.root = Path(os.environ["E2B_STANDIN_ROOT"])
Sandbox = e2b_standin.StandInSandbox
SandboxQuery = e2b_standin.SandboxQuery
CommandExitException = e2b_standin.CommandExitException
TimeoutException = e2b_standin.TimeoutException
"""
# The command leaves one line per execution in the stand-in's root (outside the sandbox's workspace).
COMMAND = "echo ran >> ../../../../commands.log && echo changed > a.txt && mkdir -p made && echo new > made/new.txt"


def rows(engine: sa.Engine, run_id: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(r.step_id, r.state) for r in patches.list_for_run(conn, run_id)]


def test_kill_9_while_sandbox_files_are_written_recovers_then_writes_them(
    spawn: Callable[..., KodoProcess], engine: sa.Engine, tmp_path: Path
) -> None:
    """Killed after the 2nd file's write (ExecuteST not committed): rows pending, disk changed. Killed again on
    recovery before its first write: the original bytes are back, the created file gone. A clean restart ends
    SUCCESS with both files written, rows applied, disk equal to the ledger, and the command run once."""
    shim = tmp_path / "shim" / "e2b"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(SHIM)
    root = tmp_path / "e2b"
    repo = seeded_repo(tmp_path / "repo", {"a.txt": ORIGINAL})
    up = spawn(
        "up",
        KODO_REPO_ROOTS=str(tmp_path),
        KODO_FAULT_POINTS="patch.after_write:kill:2",
        SBX_MODE="live",
        SBX_PROVIDER="e2b",
        E2B_API_KEY="e2b_standin",
        E2B_STANDIN_ROOT=str(root),
        PYTHONPATH=str(shim.parent),
    )
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    body = {"goal": "e2b files", "inputs": {"repo": str(repo)}, "constraints": {"testCommand": COMMAND}}
    intent = httpx.post(f"{base}/api/intents", json=body, timeout=30).json()["intentId"]
    started = httpx.post(
        f"{base}/api/runs", json={"intentId": intent, "queuePartitionKey": "p", "autoApprove": True}, timeout=30
    )
    assert started.status_code == 201, started.text
    run_id = started.json()["runId"]
    up.wait_killed()
    workspace = Path(up.env["KODO_HOME"]) / "workspaces" / run_id
    assert rows(engine, run_id) == [("ExecuteST", "pending"), ("ExecuteST", "pending")]
    assert (workspace / "a.txt").read_bytes() == b"changed\n" and (workspace / "made/new.txt").exists()

    up.restart_until_killed("patch.before_write:kill")
    assert (workspace / "a.txt").read_bytes() == ORIGINAL
    assert not (workspace / "made/new.txt").exists()
    assert rows(engine, run_id) == [("ExecuteST", "pending"), ("ExecuteST", "rolled_back")]

    up.restart_unarmed()
    wait_until(
        lambda: httpx.get(f"{base}/api/runs/{intent}", timeout=30).json()["status"] == "SUCCESS",
        timeout=90,
        what="the run to succeed after recovery",
    )
    assert (workspace / "a.txt").read_bytes() == b"changed\n"
    assert (workspace / "made/new.txt").read_bytes() == b"new\n"
    assert rows(engine, run_id) == [("ExecuteST", "applied"), ("ExecuteST", "applied")]
    with engine.connect() as conn:
        assert patches.workspace_violations(conn, workspace.parent, run_id) == []
        assert patches.list_for_run(conn, run_id)[0].preimage == ORIGINAL
    assert (root / "commands.log").read_text() == "ran\n"  # the task's child had finished: not run again
