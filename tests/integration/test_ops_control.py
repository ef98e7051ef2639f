"""The six ops workflow routes: cancel/resume at the checkpoint boundary, fork with step reuse, run-aware control."""

from __future__ import annotations

import time

import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import oracle_violations, table_counts, wait_status, wait_until
from ops_helpers import dbos_status, marks, new_run, ops_audit

ACTION = {"actor": "qa", "reason": "boundary-proof"}


def test_cancel_during_the_slow_step_sleep_holds_s2_until_resume(client: TestClient, engine: sa.Engine) -> None:
    """Cancel mid-sleep: CANCELLED with s1=1, s2=0 past the deadline; resume (same id) → SUCCESS, s1=s2=1."""
    assert client.post("/slowstep?wf=slow-1&sleep=1500").status_code == 202
    wait_until(lambda: marks(client, "slow-1")["s1"] == 1, what="s1")
    cancelled = client.post("/api/ops/wf/slow-1/cancel", json=ACTION)
    assert cancelled.status_code == 202 and cancelled.json() == {"accepted": True, "workflowID": "slow-1"}
    assert client.get("/api/ops/wf/slow-1").json()["status"] == "CANCELLED"
    time.sleep(2.5)  # past the original wake-up: the cancelled workflow stopped at its checkpoint
    assert marks(client, "slow-1") == {"s1": 1, "s2": 0}
    with engine.connect() as conn:
        before = table_counts(conn)
    again = client.post("/api/ops/wf/slow-1/cancel", json=ACTION)
    assert again.status_code == 409 and again.json()["error"] == "cannot cancel workflow in status CANCELLED"
    resumed = client.post("/api/ops/wf/slow-1/resume", json={"actor": "qa", "reason": "continue"})
    assert resumed.status_code == 202 and resumed.json()["workflowID"] == "slow-1"
    wait_until(lambda: marks(client, "slow-1")["s2"] == 1, what="s2")
    wait_until(lambda: dbos_status(engine, "slow-1") == "SUCCESS", what="SUCCESS")
    assert marks(client, "slow-1") == {"s1": 1, "s2": 1}
    with engine.connect() as conn:
        after = table_counts(conn)
    assert after["app.marks"] == before["app.marks"] + 1
    refused = client.post("/api/ops/wf/slow-1/resume", json={"actor": "qa", "reason": "again"})
    assert refused.status_code == 409 and "SUCCESS" in refused.json()["error"]
    audit = [(a["op"], a["actor"], a["reason"], a["targetWorkflowID"]) for a in ops_audit(engine, "slow-1")]
    assert audit == [("cancel", "local:qa", "boundary-proof", "slow-1"), ("resume", "local:qa", "continue", "slow-1")]
    newest_first = client.get("/api/ops/wf/slow-1").json()["audit"]
    assert [a["op"] for a in newest_first] == ["resume", "cancel"]


def test_fork_reuses_the_steps_before_n(client: TestClient, engine: sa.Engine) -> None:
    """Fork at the last step: steps 1..N-1 are copied (same checkpoints, no second sleep); N beyond → 409."""
    assert client.post("/slowstep?wf=slow-f&sleep=1500").status_code == 202
    wait_until(lambda: dbos_status(engine, "slow-f") == "SUCCESS", timeout=30, what="SUCCESS")
    steps = client.get("/api/ops/wf/slow-f/steps").json()
    assert [(s["functionId"], s["status"]) for s in steps] == [(1, "SUCCESS"), (2, "SUCCESS"), (3, "SUCCESS")]
    assert steps[1]["stepId"] == "DBOS.sleep"
    with engine.connect() as conn:
        before = table_counts(conn)
    too_far = client.post("/api/ops/wf/slow-f/fork", json={"stepN": 4, **ACTION})
    assert too_far.status_code == 409 and too_far.json()["error"] == "fork stepN 4 exceeds max step 3"
    with engine.connect() as conn:
        assert table_counts(conn) == before
    forked = client.post("/api/ops/wf/slow-f/fork", json={"stepN": 3, "actor": "qa", "reason": "fork-proof"})
    assert forked.status_code == 202
    fork_id = forked.json()["forkedWorkflowID"]
    assert fork_id != "slow-f" and forked.json()["workflowID"] == "slow-f"
    wait_until(lambda: dbos_status(engine, fork_id) == "SUCCESS", timeout=30, what="fork SUCCESS")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT workflow_uuid, function_id, started_at_epoch_ms FROM dbos.operation_outputs "
                "WHERE workflow_uuid IN ('slow-f', :f) ORDER BY function_id"
            ),
            {"f": fork_id},
        ).all()
    original = {fid: at for wid, fid, at in rows if wid == "slow-f"}
    copied = {fid: at for wid, fid, at in rows if wid == fork_id}
    assert copied[1] == original[1] and copied[2] == original[2]  # copied checkpoints, not re-executed
    assert copied[3] != original[3]  # step N ran again
    assert marks(client, "slow-f") == {"s1": 1, "s2": 1}
    summary = client.get(f"/api/ops/wf/{fork_id}").json()
    assert summary["forkedFrom"] == "slow-f" and summary["status"] == "SUCCESS"
    audit = ops_audit(engine, "slow-f")
    assert [(a["op"], a["forkedWorkflowID"], a["stepN"]) for a in audit] == [("fork", fork_id, 3)]


def test_cancel_and_resume_of_a_run_parked_at_its_gate(client: TestClient, engine: sa.Engine) -> None:
    """A parked run: cancel → canceled/NONE (continuation CANCELLED); resume → parked again; approve → SUCCESS."""
    wid = new_run(client)
    waiting = wait_status(client, wid, {"WAITING_INPUT"})
    run_id = waiting["runId"]
    continuation = waiting["currentWorkflowID"]
    assert continuation.startswith(f"{wid}:")
    wait_until(lambda: dbos_status(engine, continuation) == "DELAYED", what="the continuation enqueued")
    cancelled = client.post(f"/api/ops/wf/{run_id}/cancel", json={"actor": "fde", "reason": "stalled"})
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["canceledWorkflowIDs"] == [continuation]
    header = client.get(f"/api/runs/{wid}").json()
    assert header["status"] == "CANCELLED" and header["durableStatus"] == "canceled" and header["nextAction"] == "NONE"
    assert dbos_status(engine, continuation) == "CANCELLED"
    refused = client.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "late"})
    assert refused.status_code in {202, 409}  # the legacy route records; the run stays cancelled either way
    assert client.get(f"/api/runs/{wid}").json()["status"] == "CANCELLED"
    assert client.post(f"/api/ops/wf/{wid}/cancel", json=ACTION).status_code == 409
    resumed = client.post(f"/api/ops/wf/{wid}/resume", json={"actor": "fde", "reason": "go on"})
    assert resumed.status_code == 202, resumed.text
    again = client.get(f"/api/runs/{wid}").json()
    assert again["status"] == "WAITING_INPUT" and again["nextAction"] == "APPROVE_PLAN"
    assert dbos_status(engine, continuation) == "DELAYED"
    gates = client.get(f"/api/runs/{wid}/gates").json()
    gate_key = gates[0]["gateKey"]
    reply = {"payload": {"choice": "yes"}, "dedupeKey": "d-1", "origin": "manual"}
    assert client.post(f"/api/runs/{wid}/gates/{gate_key}/reply", json=reply).status_code == 200
    assert wait_status(client, wid, {"SUCCESS", "ERROR", "CANCELLED"})["status"] == "SUCCESS"
    audit = ops_audit(engine, run_id)
    assert [(a["op"], a["targetWorkflowID"], a["runId"]) for a in audit] == [
        ("cancel", continuation, run_id),
        ("resume", continuation, run_id),
    ]
    assert (
        client.post(f"/api/ops/wf/{wid}/cancel", json=ACTION).json()["error"] == "cannot cancel run in status succeeded"
    )
    with engine.connect() as conn:
        assert oracle_violations(conn) == {}
