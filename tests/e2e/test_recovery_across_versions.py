"""In-flight runs recorded with an earlier kodo (``tests/fixtures/``) finish with today's code.

The fixtures hold what DBOS checkpointed for a run (workflow inputs, step outputs such as the run context)
and its ``app`` rows, recorded by ``tests/e2e/record_recovery_fixtures.py`` before the run context became a
typed record. Loading them into a fresh database and starting ``kodo up`` with the same executor id shows the
checkpointed JSON is still read as before.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import sqlalchemy as sa

import recovery_fixtures
from helpers import oracle_violations, wait_until
from processes import KodoProcess

STEPS = {"CompileST": 1, "ApplyPatchST": 1, "DecideST": 1, "ExecuteST": 1}


def _load(engine: sa.Engine, name: str, home: Path) -> str:
    rows = recovery_fixtures.read(name)
    with engine.begin() as conn:
        recovery_fixtures.load(conn, rows, home)
    return str(rows["app.runs"][0]["workflow_id"])


def _workflows(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, status FROM dbos.workflow_status ORDER BY name")).all()
    return [(str(name), str(status)) for name, status in rows]


def _finished(engine: sa.Engine, base: str, wid: str) -> None:
    wait_until(lambda: httpx.get(f"{base}/api/runs/{wid}").json()["status"] == "SUCCESS", timeout=90, what="SUCCESS")
    # The run row says succeeded in ExecuteST's transaction; its workflow returns just after.
    done = [(name, "SUCCESS") for name in ("ExecuteTask", "ResumeRun", "RunIntent")]
    wait_until(lambda: _workflows(engine) == done, timeout=30, what="every workflow SUCCESS")
    with engine.connect() as conn:
        attempts = dict(conn.execute(sa.text("SELECT step_id, max(attempt) FROM app.run_steps GROUP BY step_id")).all())
        assert oracle_violations(conn) == {}
    assert attempts == STEPS


def test_a_run_parked_at_its_plan_gate_before_the_change_finishes_after_it(
    spawn: Callable[..., KodoProcess], engine: sa.Engine, tmp_path: Path
) -> None:
    """A recorded parked run: its gate answered "yes" now, its continuation finishes it, each step once."""
    wid = _load(engine, "parked_at_plan_gate", tmp_path / "home")
    up = spawn("up", DBOS__VMID=recovery_fixtures.EXECUTOR_ID)
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    assert httpx.get(f"{base}/api/runs/{wid}").json()["status"] == "WAITING_INPUT"
    gate = httpx.get(f"{base}/api/runs/{wid}/gates").json()[0]
    assert gate["purpose"] == "approve-plan" and gate["state"] == "PENDING"
    body = {"payload": {"choice": "yes"}, "dedupeKey": "after-the-change", "origin": "manual"}
    assert httpx.post(f"{base}/api/runs/{wid}/gates/{gate['gateKey']}/reply", json=body).status_code == 200
    _finished(engine, base, wid)


def test_a_run_killed_mid_continuation_before_the_change_recovers_after_it(
    spawn: Callable[..., KodoProcess], engine: sa.Engine, tmp_path: Path
) -> None:
    """A recorded continuation killed after checkpointing its run context: recovery replays that context."""
    wid = _load(engine, "killed_mid_resume", tmp_path / "home")
    up = spawn("up", DBOS__VMID=recovery_fixtures.EXECUTOR_ID)
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    _finished(engine, base, wid)
