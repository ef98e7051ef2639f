"""A run waiting for a human holds no queue slot (issue: parked runs must not freeze their partition)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import make_settings, oracle_violations, wait_status, wait_until
from kodo.settings import Settings


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The predecessor's limits, strict: at most 5 running parents per partition; 3 sandboxes per partition."""
    return make_settings(
        database_url,
        tmp_path / "home",
        INTENT_QUEUE_WORKER_CONCURRENCY="5",
        INTENT_QUEUE_CONCURRENCY="5",
        SBX_QUEUE_WORKER_CONCURRENCY="3",
        CHAOS_SLEEP_EXECUTE="300",
    )


def test_eight_parked_runs_in_one_partition_do_not_block_it(client: TestClient, engine: sa.Engine) -> None:
    """8 runs in one partition (limit 5) all reach WAITING_INPUT, then all succeed after approval."""
    wids = []
    for n in range(8):
        intent = client.post("/api/intents", json={"goal": f"slot {n}", "inputs": {}, "constraints": {}}).json()
        started = client.post("/api/runs", json={"intentId": intent["intentId"], "queuePartitionKey": "team-a"})
        assert started.status_code == 201
        wids.append(intent["intentId"])
    for wid in wids:
        assert wait_status(client, wid, {"WAITING_INPUT"}, timeout=60)["nextAction"] == "APPROVE_PLAN"

    def running_parents() -> int:
        with engine.connect() as conn:
            query = "SELECT count(*) FROM dbos.workflow_status WHERE queue_name='intentQ' AND status='PENDING'"
            return int(conn.execute(sa.text(query)).scalar_one())

    # Parked runs hold no slot: once parked, none of their parent workflows is running.
    wait_until(lambda: running_parents() == 0, what="no running parent")
    for wid in wids:
        assert client.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "lead"}).status_code == 202
    for wid in wids:
        assert wait_status(client, wid, {"SUCCESS", "ERROR"}, timeout=60)["status"] == "SUCCESS"
    with engine.connect() as conn:
        gates = conn.execute(sa.text("SELECT run_id, count(*) FROM app.human_gates GROUP BY run_id")).all()
        assert oracle_violations(conn) == {}
    assert len(gates) == 8 and all(count == 1 for _run, count in gates)


def test_sandbox_limits_still_hold(client: TestClient, engine: sa.Engine, settings: Settings) -> None:
    """Sandbox tasks keep their per-partition worker limit (here 3) while parents park elsewhere."""
    intent = client.post("/api/intents", json={"goal": "fan", "inputs": {}, "constraints": {}}).json()["intentId"]
    body = {
        "intentId": intent,
        "queuePartitionKey": "team-a",
        "autoApprove": True,
        "workload": {"concurrency": 1, "steps": 9, "sandboxMinutes": 1},
    }
    assert client.post("/api/runs", json=body).status_code == 201
    assert wait_status(client, intent, {"SUCCESS", "ERROR"}, timeout=60)["status"] == "SUCCESS"
    with engine.connect() as conn:
        spans = conn.execute(
            sa.text("SELECT started_at_epoch_ms, updated_at FROM dbos.workflow_status WHERE name = 'ExecuteTask'")
        ).all()
    assert len(spans) == 9
    edges = sorted([(start, 1) for start, _end in spans] + [(end, -1) for _start, end in spans])
    running = peak = 0
    for _at, change in edges:
        running += change
        peak = max(peak, running)
    assert 2 <= peak <= settings.sbx_queue_worker_concurrency
