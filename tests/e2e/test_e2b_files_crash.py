"""kill -9 of a real ``kodo up`` on SBX_PROVIDER=e2b (the real SDK against the loopback stand-in of E2B,
``tests/e2b_service.py``, served by the test process) while ExecuteST writes the files the sandbox changed into the
local workspace: recovery restores the original, then writes them again; the workspace never stays mixed, the
ledger says which, and the command ran once (recalled from the kept sandbox through E2B's list and envd)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from e2b_service import API_KEY, SHARED, E2BService, running
from helpers import wait_until
from kodo.store import patches
from processes import KodoProcess

ORIGINAL = b"original \xff\xfe bytes\n"
# The command leaves one line per execution in the directory every sandbox of the stand-in shares.
COMMAND = (
    f"echo ran >> {SHARED}/commands.log && echo changed > a.txt && mkdir -p made && echo new > made/new.txt"
    " && rm gone.txt"
)
GONE = b"deleted in the sandbox\n"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[E2BService]:
    """The stand-in; asked for before ``spawn``, it is stopped after the test's kodo processes."""
    with running(tmp_path / "e2b") as standin:
        yield standin


def make_repo(path: Path) -> Path:
    path.mkdir()
    (path / "a.txt").write_bytes(ORIGINAL)
    (path / "gone.txt").write_bytes(GONE)
    for args in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=kodo", "-c", "user.email=kodo@example.invalid", "commit", "-q", "-m", "seed"],
    ):
        subprocess.run(["git", *args], cwd=path, check=True, timeout=30)
    return path


def rows(engine: sa.Engine, run_id: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(r.step_id, r.state) for r in patches.list_for_run(conn, run_id)]


def restart_until_killed(process: KodoProcess, fault_points: str) -> None:
    process.env["KODO_FAULT_POINTS"] = fault_points
    health, process.health_url = process.health_url, None
    process.start()
    process.health_url = health
    assert process.proc is not None
    assert process.proc.wait(timeout=120) == -9, process.tail()


def test_kill_9_while_sandbox_files_are_written_recovers_then_writes_them(
    service: E2BService, spawn: Callable[..., KodoProcess], engine: sa.Engine, tmp_path: Path
) -> None:
    """Killed after the 3rd write — the deletion — (ExecuteST not committed): rows pending, disk changed. Killed
    again on recovery before its first write: the original bytes are back, the created file gone, the deleted one
    back. A clean restart ends SUCCESS with the files written and deleted, rows applied, disk equal to the ledger,
    and the command run once."""
    repo = make_repo(tmp_path / "repo")
    up = spawn(
        "up",
        KODO_REPO_ROOTS=str(tmp_path),
        KODO_FAULT_POINTS="patch.after_write:kill:3",
        SBX_MODE="live",
        SBX_PROVIDER="e2b",
        E2B_API_KEY=API_KEY,
        E2B_API_URL=service.url,
        E2B_SANDBOX_URL=service.url,
    )
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    body = {"goal": "e2b files", "inputs": {"repo": str(repo)}, "constraints": {"testCommand": COMMAND}}
    intent = httpx.post(f"{base}/api/intents", json=body, timeout=30).json()["intentId"]
    started = httpx.post(
        f"{base}/api/runs", json={"intentId": intent, "queuePartitionKey": "p", "autoApprove": True}, timeout=30
    )
    assert started.status_code == 201, started.text
    run_id = started.json()["runId"]
    assert up.proc is not None and up.proc.wait(timeout=120) == -9, up.tail()
    workspace = Path(up.env["KODO_HOME"]) / "workspaces" / run_id
    assert rows(engine, run_id) == [("ExecuteST", "pending")] * 3
    assert (workspace / "a.txt").read_bytes() == b"changed\n" and (workspace / "made/new.txt").exists()
    assert not (workspace / "gone.txt").exists()  # the deletion was the write the kill followed

    restart_until_killed(up, "patch.before_write:kill")
    assert (workspace / "a.txt").read_bytes() == ORIGINAL
    assert not (workspace / "made/new.txt").exists() and (workspace / "gone.txt").read_bytes() == GONE
    assert rows(engine, run_id) == [
        ("ExecuteST", "pending"),
        ("ExecuteST", "rolled_back"),
        ("ExecuteST", "rolled_back"),
    ]

    up.env.pop("KODO_FAULT_POINTS")
    up.start()
    wait_until(
        lambda: httpx.get(f"{base}/api/runs/{intent}", timeout=30).json()["status"] == "SUCCESS",
        timeout=90,
        what="the run to succeed after recovery",
    )
    assert (workspace / "a.txt").read_bytes() == b"changed\n"
    assert (workspace / "made/new.txt").read_bytes() == b"new\n" and not (workspace / "gone.txt").exists()
    assert rows(engine, run_id) == [("ExecuteST", "applied")] * 3
    with engine.connect() as conn:
        assert patches.workspace_violations(conn, workspace.parent, run_id) == []
        assert patches.list_for_run(conn, run_id)[0].preimage == ORIGINAL
    assert (service.shared / "commands.log").read_text() == "ran\n"  # the task's child had finished: not run again
