"""A run against a real git repository, with its real test suite executed in the local bubblewrap sandbox.

``kodo up`` runs as a subprocess with ``SBX_MODE=live SBX_PROVIDER=local``. The repository holds a
tiny module with a bug and a ``unittest`` test that fails on it. The intent's ``inputs.repo`` makes
the run's workspace a clone of it; ``constraints.patchPlan`` (copied into the plan by the replay
producer) fixes the bug during ApplyPatchST; ``constraints.testCommand`` becomes the one sandbox task.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from git_repos import BUGGY, FIXED, TEST_COMMAND, make_repo
from helpers import oracle_violations, wait_until
from processes import KodoProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed"),
]


def run_intent(base: str, repo: Path, *, patched: bool) -> dict[str, Any]:
    constraints: dict[str, Any] = {"testCommand": TEST_COMMAND}
    if patched:
        diff = "--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n"
        constraints["patchPlan"] = [{"targetPath": "calc.py", "postimageContent": FIXED, "diffText": diff}]
    intent = {
        "goal": "fix add" if patched else "leave add alone",
        "inputs": {"repo": str(repo)},
        "constraints": constraints,
    }
    created = httpx.post(f"{base}/api/intents", json=intent, timeout=30)
    assert created.status_code == 201, created.text
    intent_id = created.json()["intentId"]
    body = {"intentId": intent_id, "queuePartitionKey": "repo-tests", "autoApprove": True}
    started = httpx.post(f"{base}/api/runs", json=body, timeout=30)
    assert started.status_code in {200, 201}, started.text

    def finished() -> dict[str, Any] | None:
        header = httpx.get(f"{base}/api/runs/{intent_id}", timeout=30).json()
        return header if header.get("status") in {"SUCCESS", "ERROR", "CANCELLED"} else None

    return dict(wait_until(finished, timeout=90, interval=0.2, what=f"run {intent_id} to finish"))


def sandbox_rows(engine: sa.Engine, run_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT err_code, response FROM app.sbx_runs WHERE run_id = :r ORDER BY attempt"), {"r": run_id}
        ).all()
    return [{"errCode": r.err_code, **r.response} for r in rows]


def test_patched_repository_passes_its_tests_in_the_local_sandbox(
    spawn: Callable[..., KodoProcess], engine: sa.Engine, tmp_path: Path
) -> None:
    """The patch fixes the clone, the repo's own unittest runs under bwrap and the run succeeds; unpatched it fails."""
    repo = make_repo(tmp_path / "repo")
    server = spawn(
        "up", SBX_MODE="live", SBX_PROVIDER="local", SBX_DEFAULT_TIMEOUT_MS="60000", KODO_REPO_ROOTS=str(tmp_path)
    )
    base = f"http://127.0.0.1:{server.port}"  # type: ignore[attr-defined]

    fixed = run_intent(base, repo, patched=True)
    assert fixed["status"] == "SUCCESS", fixed
    (row,) = sandbox_rows(engine, fixed["runId"])
    assert row["errCode"] == "NONE" and row["exit"] == 0
    assert "test_adds" in row["stderr"] and "OK" in row["stderr"]
    assert row["raw"]["provider"] == "local" and row["raw"]["isolation"] == "bwrap"
    workspace = Path(row["raw"]["workdir"])
    assert workspace.name == fixed["runId"] and (workspace / "calc.py").read_text() == FIXED
    assert (repo / "calc.py").read_text() == BUGGY  # the repository itself is never touched

    broken = run_intent(base, repo, patched=False)
    assert broken["status"] == "ERROR" and broken["nextAction"] == "REPAIR", broken
    assert broken["error"]["code"] == "CMD_NONZERO"
    (failed,) = sandbox_rows(engine, broken["runId"])
    assert failed["errCode"] == "CMD_NONZERO" and failed["exit"] == 1
    assert "AssertionError: -1 != 5" in failed["stderr"]
    with engine.connect() as conn:
        assert oracle_violations(conn) == {}
