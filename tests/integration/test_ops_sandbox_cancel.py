"""Cancel of a run whose sandbox command is running: the process tree dies at once; resume runs it again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import make_settings, oracle_violations, wait_status, wait_until
from kodo.settings import Settings
from ops_helpers import dbos_status, new_run


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The live local sandbox (bwrap when installed), so a cancel has a real process tree to kill."""
    return make_settings(
        database_url, tmp_path / "home", SBX_MODE="live", SBX_PROVIDER="local", KODO_CANCEL_POLL_INTERVAL_SEC="0.1"
    )


def test_cancel_of_a_running_run_kills_its_sandbox_and_resume_reruns_it(client: TestClient, engine: sa.Engine) -> None:
    """Cancel while `sleep` runs in the sandbox: its tree dies at once, nothing is recorded; resume → SUCCESS."""
    from kodo.workflows import runtime

    sandbox: Any = runtime.services().sandbox
    wid = new_run(client, "run a slow command", autoApprove=True, constraints={"testCommand": "sleep 3"})
    wait_until(lambda: sandbox.running(), timeout=30, what="the sandbox command running")
    task_key = sandbox.running()[0]
    cancelled = client.post(f"/api/ops/wf/{wid}/cancel", json={"actor": "sre", "reason": "runaway"})
    assert cancelled.status_code == 202
    assert task_key in cancelled.json()["canceledWorkflowIDs"] or dbos_status(engine, task_key) == "CANCELLED"
    started = time.monotonic()
    wait_until(lambda: not sandbox.running(), timeout=5, what="the sandbox killed")
    assert time.monotonic() - started < 2.0
    assert dbos_status(engine, task_key) == "CANCELLED"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM app.sbx_runs")).scalar_one() == 0
    assert client.get(f"/api/runs/{wid}").json()["status"] == "CANCELLED"
    assert client.post(f"/api/ops/wf/{wid}/resume", json={"actor": "sre", "reason": "retry it"}).status_code == 202
    assert client.get(f"/api/runs/{wid}").json()["durableStatus"] == "running"
    assert wait_status(client, wid, {"SUCCESS", "ERROR", "CANCELLED"}, timeout=60)["status"] == "SUCCESS"
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT attempt, err_code FROM app.sbx_runs")).all()
        assert oracle_violations(conn) == {}
    assert [tuple(r) for r in rows] == [(1, "NONE")]
