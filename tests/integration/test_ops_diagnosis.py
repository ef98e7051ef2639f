"""Diagnosis names the right cause: gate, cancel, missing worker version, queue position, retries, dead executor.

Also the per-run evidence routes (repro pack, proof cards), which like diagnosis never write.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import make_settings, table_counts, wait_status, wait_until
from kodo.settings import Settings
from ops_helpers import dbos_status, marks, new_run

TERMINAL = {"SUCCESS", "ERROR", "CANCELLED"}


@pytest.fixture
def settings(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Fast heartbeats; a test may add settings through indirect parametrization."""
    extra: dict[str, str] = getattr(request, "param", {})
    return make_settings(database_url, tmp_path / "home", **{"KODO_HEARTBEAT_INTERVAL_SEC": "0.2", **extra})


def why(client: TestClient, key: str) -> dict[str, Any]:
    response = client.get(f"/api/runs/{key}/diagnosis")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_waiting_on_a_gate_then_cancelled_by_whom_and_why(client: TestClient, engine: sa.Engine) -> None:
    """A parked run: WAITING_ON_GATE (gate key, since); after an ops cancel: CANCELLED by actor for reason."""
    wid = new_run(client, partition="d-gate")
    wait_status(client, wid, {"WAITING_INPUT"})
    wait_until(lambda: dbos_status(engine, wid) == "SUCCESS", what="RunIntent parked and done")
    with engine.connect() as conn:
        before = table_counts(conn)
    found = why(client, wid)
    gate = client.get(f"/api/runs/{wid}/gates").json()[0]
    assert found["code"] == "WAITING_ON_GATE" and found["details"]["gateKey"] == gate["gateKey"]
    assert f"waiting on gate {gate['gateKey']} (approve-plan, next action APPROVE_PLAN) since" in found["reason"]
    assert found["details"]["deadline"] and found["runStatus"] == "waiting_input"
    assert why(client, found["runId"])["code"] == "WAITING_ON_GATE"  # run id works too
    missing = client.get("/api/runs/nope/diagnosis")
    assert missing.status_code == 404
    with engine.connect() as conn:
        assert table_counts(conn) == before
    body = {"actor": "alice", "reason": "customer withdrew the request"}
    assert client.post(f"/api/ops/wf/{wid}/cancel", json=body).status_code == 202
    found = why(client, wid)
    assert found["code"] == "CANCELLED"
    assert (
        "cancelled by local:alice at" in found["reason"]
        and "for reason: customer withdrew the request" in found["reason"]
    )
    assert found["details"]["actor"] == "local:alice"


def test_no_live_worker_for_the_run_version(client: TestClient, engine: sa.Engine, settings: Settings) -> None:
    """A run enqueued for v9 while only a v1 worker lives: NO_LIVE_WORKER naming both; listed as stranded."""
    from kodo.api import create_api
    from kodo.api.deps import ApiContext
    from kodo.main import dbos_client

    v9 = settings.model_copy(update={"app_version": "v9"})
    dbos = dbos_client(v9, engine)
    try:
        with TestClient(
            create_api(ApiContext(settings=v9, engine=engine, client=dbos, role="api")), base_url="http://127.0.0.1"
        ) as shim:
            wid = new_run(shim, partition="d-version")
    finally:
        dbos.destroy()
    wait_until(lambda: client.get("/api/ops/executors").json()["executors"], what="heartbeat")
    found = why(client, wid)
    assert found["code"] == "NO_LIVE_WORKER", found
    assert "application version v9" in found["reason"] and "v1 on" in found["reason"]
    stranded = client.get("/api/ops/executors").json()["stranded"]
    assert [s["workflowID"] for s in stranded] == [wid]
    assert client.get(f"/api/runs/{wid}").json()["status"] == "ENQUEUED"


@pytest.mark.parametrize(
    "settings",
    [{"INTENT_QUEUE_CONCURRENCY": "1", "INTENT_QUEUE_WORKER_CONCURRENCY": "1", "CHAOS_SLEEP_EXECUTE": "6000"}],
    indirect=True,
)
def test_queued_behind_n_in_its_partition(client: TestClient, engine: sa.Engine) -> None:
    """One running run holds partition P (limit 1): the third run is QUEUED_BEHIND 2 (1 running, 1 ahead)."""
    first = new_run(client, "first", partition="team-p", autoApprove=True)

    def sandbox_running() -> bool:  # the first run's sandbox task is executing (a 6 s chaos sleep)
        with engine.connect() as conn:
            query = "SELECT count(*) FROM dbos.workflow_status WHERE parent_workflow_id = :p AND status = 'PENDING'"
            return bool(conn.execute(sa.text(query), {"p": first}).scalar_one())

    wait_until(sandbox_running, what="first running its sandbox task")
    second = new_run(client, "second", partition="team-p", autoApprove=True)
    third = new_run(client, "third", partition="team-p", autoApprove=True)
    found = why(client, third)
    assert found["code"] == "QUEUED_BEHIND", found
    assert found["details"]["partition"] == "team-p" and found["details"]["behind"] == 2
    assert "queued behind 2 in partition team-p of queue intentQ (1 running, 1 queued ahead" in found["reason"]
    assert why(client, second)["details"]["behind"] == 1
    assert why(client, first)["code"] == "RUNNING"
    for wid in (first, second, third):
        client.post(f"/api/ops/wf/{wid}/cancel", json={"actor": "t", "reason": "cleanup"})


def test_retrying_step_names_the_attempt(client: TestClient, engine: sa.Engine) -> None:
    """A sandbox task failing with BOOT_FAIL: RETRYING_STEP ExecuteST attempt k of 3; then FAILED."""
    wid = new_run(client, "infra", partition="d-retry", autoApprove=True, constraints={"testCommand": "INFRA_FAIL x"})
    seen = wait_until(
        lambda: (found := why(client, wid))["code"] == "RETRYING_STEP" and found, timeout=30, what="retrying"
    )
    assert seen["details"]["step"] == "ExecuteST" and seen["details"]["attempt"] in {2, 3}
    assert seen["details"]["lastError"] == "BOOT_FAIL"
    assert f"attempt {seen['details']['attempt']} of 3 after BOOT_FAIL" in seen["reason"]
    wait_status(client, wid, TERMINAL, timeout=30)
    failed = why(client, wid)
    assert failed["code"] == "FAILED" and "SBX_RETRIES_EXHAUSTED" in failed["reason"] and "REPAIR" in failed["reason"]


@pytest.mark.parametrize(
    "settings", [{"KODO_RECOVERY_ENABLED": "false", "KODO_HEARTBEAT_INTERVAL_SEC": "3600"}], indirect=True
)
def test_dead_executor_and_stranded_version(client: TestClient, engine: sa.Engine) -> None:
    """A PENDING workflow whose executor went silent: DEAD_EXECUTOR while v1 is served elsewhere, else stranded."""
    assert client.post("/slowstep?wf=slow-d&sleep=20000").status_code == 202
    wait_until(lambda: marks(client, "slow-d")["s1"] == 1, what="slow-d sleeping")

    def beat_once() -> bool:  # the worker's first (and, at this interval, only) heartbeat must land first
        with engine.connect() as conn:
            return bool(conn.execute(sa.text("SELECT count(*) FROM app.executors")).scalar_one())

    wait_until(beat_once, what="the worker's first heartbeat")
    with engine.begin() as conn:  # this worker "dies" (no heartbeat for an hour); another one serves v1
        conn.execute(sa.text("UPDATE app.executors SET heartbeat_at = now() - interval '1 hour'"))
        conn.execute(
            sa.text(
                "INSERT INTO app.executors (executor_id, role, app_version, hostname, pid) "
                "VALUES ('other-worker', 'worker', 'v1', 'elsewhere', 1)"
            )
        )
    found = why(client, "slow-d")
    assert found["code"] == "DEAD_EXECUTOR", found
    assert "silent for 3600s" in found["reason"] or "silent for 359" in found["reason"]
    awaiting = client.get("/api/ops/executors").json()["awaitingRecovery"]
    assert [a["workflowID"] for a in awaiting] == ["slow-d"]
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE app.executors SET app_version = 'v2' WHERE executor_id = 'other-worker'"))
    stranded = why(client, "slow-d")
    assert stranded["code"] == "NO_LIVE_WORKER" and "v2 on other-worker" in stranded["reason"]
    assert [s["workflowID"] for s in client.get("/api/ops/executors").json()["stranded"]] == ["slow-d"]


def test_an_owner_whose_heartbeat_is_overdue_is_named_before_it_is_dead(client: TestClient, engine: sa.Engine) -> None:
    """A PENDING workflow whose executor missed heartbeats (not dead until 30 s) is OWNER_SILENT, not RUNNING."""
    assert client.post("/slowstep?wf=slow-o&sleep=20000").status_code == 202
    wait_until(lambda: marks(client, "slow-o")["s1"] == 1, what="slow-o sleeping")

    def beat_once() -> bool:
        with engine.connect() as conn:
            return bool(conn.execute(sa.text("SELECT count(*) FROM app.executors")).scalar_one())

    wait_until(beat_once, what="the worker's first heartbeat")
    assert why(client, "slow-o")["code"] == "RUNNING"
    with engine.begin() as conn:  # as after a kill -9: 10 s without a heartbeat (every 0.2 s), dead only after 30 s
        conn.execute(sa.text("UPDATE app.executors SET heartbeat_at = now() - interval '10 seconds'"))
    found = why(client, "slow-o")
    assert found["code"] == "OWNER_SILENT", found
    assert "heartbeat is overdue" in found["reason"] and "declared dead after 30s" in found["reason"]
    assert found["details"]["heartbeatAgeMs"] >= 10_000


@pytest.fixture
def finished_run(client: TestClient) -> Iterator[str]:
    wid = new_run(client, "evidence", partition="d-evidence", autoApprove=True)
    assert wait_status(client, wid, TERMINAL)["status"] == "SUCCESS"
    yield wid


def test_repro_pack_and_proof_cards(client: TestClient, engine: sa.Engine, finished_run: str) -> None:
    """Repro: canonical JSON of the run's rows and DBOS workflows; proofs: cards newest first; 404 / []."""
    wid = finished_run
    with engine.connect() as conn:
        before = table_counts(conn)
    response = client.get(f"/api/runs/{wid}/repro")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    pack = json.loads(response.text)
    assert response.text == json.dumps(pack, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert pack["meta"]["workflowId"] == wid and pack["run"]["status"] == "succeeded"
    assert [s["step_id"] for s in pack["runSteps"]] == sorted(["ApplyPatchST", "CompileST", "DecideST", "ExecuteST"])
    scope = pack["dbos"]["workflowScope"]
    assert scope[0] == wid and any(s["name"] == "ExecuteTask" for s in pack["dbos"]["statuses"])
    assert pack["dbos"]["operations"] and pack["sbxRuns"] and pack["intent"]["id"] == wid
    assert client.get(f"/api/runs/{pack['meta']['runId']}/repro").text == response.text
    assert client.get("/api/runs/nope/repro").json() == {"error": "run not found"}
    cards = client.get(f"/api/runs/{wid}/proofs").json()
    claims = [c["claim"] for c in cards]
    assert "Workflow Status (App)" in claims and "Step Execution: ExecuteST" in claims
    assert "Side Effects Exactly Once" in claims and "Queue Partition Policy" in claims
    assert [c["sourceTs"] for c in cards] == sorted((c["sourceTs"] for c in cards), reverse=True)
    assert client.get("/api/runs/nope/proofs").json() == []
    assert client.get(f"/api/runs/{wid}/proofs?x=1").status_code == 400
    with engine.connect() as conn:
        assert table_counts(conn) == before
