"""Records the recovery fixtures of ``tests/fixtures/`` (not collected: run it on purpose, with the code of the day).

    uv run pytest tests/e2e/record_recovery_fixtures.py

``parked_at_plan_gate``: a run of a real ``kodo up`` parked at its plan gate (its ``ResumeRun`` delayed).
``killed_mid_resume``: the same run answered "yes", its process killed (-9) once the continuation had checkpointed
its first transaction (the run context) and DecideST, and its first sandbox task had committed its execution row.
``tests/e2e/test_recovery_across_versions.py`` loads them and finishes the run with the code of today.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import sqlalchemy as sa

import recovery_fixtures
from helpers import wait_until
from kodo.store import create_engine
from processes import KodoProcess


def test_record_recovery_fixtures(
    spawn: Callable[..., KodoProcess], engine: sa.Engine, template_url: str, tmp_path: Path
) -> None:
    """Writes tests/fixtures/parked_at_plan_gate.json and killed_mid_resume.json from a real kodo up."""
    up = spawn("up", DBOS__VMID=recovery_fixtures.EXECUTOR_ID, KODO_FAULT_POINTS="sandbox.before_command:kill")
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    intent = httpx.post(f"{base}/api/intents", json={"goal": "recorded", "inputs": {}, "constraints": {}}).json()
    wid = intent["intentId"]
    assert httpx.post(f"{base}/api/runs", json={"intentId": wid, "queuePartitionKey": "rec"}).status_code == 201
    wait_until(lambda: httpx.get(f"{base}/api/runs/{wid}").json()["dbosStatus"] == "DELAYED", timeout=60)
    template = create_engine(template_url)
    try:
        with engine.connect() as conn, template.connect() as base_conn:
            recovery_fixtures.write("parked_at_plan_gate", recovery_fixtures.dump(conn, base_conn, tmp_path / "home"))
        gate = httpx.get(f"{base}/api/runs/{wid}/gates").json()[0]["gateKey"]
        body = {"payload": {"choice": "yes"}, "dedupeKey": "recorded", "origin": "manual"}
        assert httpx.post(f"{base}/api/runs/{wid}/gates/{gate}/reply", json=body).status_code == 200
        assert up.proc is not None
        up.proc.wait(timeout=60)  # killed at sandbox.before_command
        with engine.connect() as conn, template.connect() as base_conn:
            recovery_fixtures.write("killed_mid_resume", recovery_fixtures.dump(conn, base_conn, tmp_path / "home"))
    finally:
        template.dispose()
