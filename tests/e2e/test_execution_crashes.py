"""kill -9 around a sandbox command of a real ``kodo up`` (local sandbox, bubblewrap): a crash after the command
ended re-runs nothing (``reused``), a crash during it re-runs it once, visibly (``interrupted`` + ``finished``),
and the commands' own trace files in the workspace agree with the execution ledger."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from helpers import oracle_violations, wait_until
from processes import KodoProcess

# Each execution appends "start <id>" and, if it is not cut off, "end <id>" to trace-<test>.log in the workspace.
TRACE = (
    'bash -c \'echo "start $KODO_EXECUTION_ID" >> trace-$0.log; sleep {sleep}; '
    'echo "end $KODO_EXECUTION_ID" >> trace-$0.log\''
)
LOCAL = {"SBX_MODE": "live", "SBX_PROVIDER": "local"}


def _start_run(base: str, sleep: float) -> str:
    constraints = {"testCommand": TRACE.format(sleep=sleep), "tests": ["t1"]}
    intent = httpx.post(f"{base}/api/intents", json={"goal": "trace", "inputs": {}, "constraints": constraints})
    wid = str(intent.json()["intentId"])
    body = {"intentId": wid, "queuePartitionKey": "crash", "autoApprove": True}
    assert httpx.post(f"{base}/api/runs", json=body).status_code == 201
    return wid


def _trace(home: Path, engine: sa.Engine, wid: str) -> list[str]:
    with engine.connect() as conn:
        run_id = conn.execute(sa.text("SELECT id FROM app.runs WHERE workflow_id = :w"), {"w": wid}).scalar_one()
    path = home / "workspaces" / run_id / "trace-t1.log"
    return path.read_text().splitlines() if path.exists() else []


def _succeeded(base: str, wid: str) -> bool:
    return bool(httpx.get(f"{base}/api/runs/{wid}").json().get("status") == "SUCCESS")


def _executions(base: str, wid: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{base}/api/runs/{wid}/executions").json())


def test_kill_after_the_command_reuses_its_result(
    spawn: Callable[..., KodoProcess], engine: sa.Engine, tmp_path: Path
) -> None:
    """Killed after the command ended, before its checkpoint: after restart one `finished` + one `reused`, ran once."""
    up = spawn("up", KODO_FAULT_POINTS="sandbox.after_command:kill", **LOCAL)
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    wid = _start_run(base, 0)
    assert up.proc is not None
    wait_until(lambda: up.proc is not None and up.proc.poll() is not None, timeout=60, what="the fault's kill")
    up.restart_unarmed()
    wait_until(lambda: _succeeded(base, wid), timeout=60, what="SUCCESS")
    rows = _executions(base, wid)
    assert [r["status"] for r in rows] == ["finished", "reused"]
    assert rows[1]["reusedFrom"] == rows[0]["executionId"] and rows[0]["exit"] == rows[1]["exit"] == 0
    producer = rows[0]["executionId"]
    assert _trace(tmp_path / "home", engine, wid) == [f"start {producer}", f"end {producer}"]
    with engine.connect() as conn:
        assert oracle_violations(conn) == {}
        assert conn.execute(sa.text("SELECT count(*) FROM app.sbx_runs")).scalar_one() == 1


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="without bubblewrap a command outlives its killed worker")
def test_kill_during_the_command_reruns_it_once_visibly(
    spawn: Callable[..., KodoProcess], engine: sa.Engine, tmp_path: Path
) -> None:
    """Killed while the command runs: after restart one `interrupted` (found by the restarted executor) + one
    `finished`, and the trace shows the first execution started and never ended."""
    up = spawn("up", **LOCAL)
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    wid = _start_run(base, 3)
    home = tmp_path / "home"
    wait_until(lambda: _trace(home, engine, wid), timeout=60, what="the command's start line")
    up.kill9()
    up.start()
    wait_until(lambda: _succeeded(base, wid), timeout=60, what="SUCCESS")
    rows = _executions(base, wid)
    assert [r["status"] for r in rows] == ["interrupted", "finished"]
    first, second = rows[0]["executionId"], rows[1]["executionId"]
    assert rows[0]["interruptedBy"].endswith("(start)") and rows[0]["finishedAt"] is None
    assert _trace(home, engine, wid) == [f"start {first}", f"start {second}", f"end {second}"]
    with engine.connect() as conn:
        assert oracle_violations(conn) == {}
