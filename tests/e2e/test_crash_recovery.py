"""kill -9 of a real ``kodo up`` mid-workflow: after a restart the work finishes, each side effect once."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import sqlalchemy as sa

from helpers import oracle_violations, wait_until
from processes import KodoProcess


def test_crash_demo_survives_kill_9_during_the_durable_sleep(
    spawn: Callable[..., KodoProcess], engine: sa.Engine
) -> None:
    """POST /crashdemo, kill -9 during the sleep, restart: marks {s1:1, s2:1} and DBOS SUCCESS."""
    up = spawn("up", WF_SLEEP_MS="3000")
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    accepted = httpx.post(f"{base}/crashdemo?wf=crash-1")
    assert accepted.status_code == 202 and accepted.json() == {"accepted": True, "workflowId": "crash-1"}
    wait_until(lambda: httpx.get(f"{base}/marks?wf=crash-1").json()["s1"] == 1, what="s1")
    up.kill9()
    with engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM dbos.workflow_status WHERE workflow_uuid='crash-1'")).scalar()
    assert status == "PENDING"
    up.start()
    wait_until(lambda: httpx.get(f"{base}/marks?wf=crash-1").json()["s2"] == 1, timeout=30, what="s2")
    assert httpx.get(f"{base}/marks?wf=crash-1").json() == {"s1": 1, "s2": 1}
    with engine.connect() as conn:
        final = conn.execute(sa.text("SELECT status FROM dbos.workflow_status WHERE workflow_uuid='crash-1'")).scalar()
    assert final == "SUCCESS"


def test_kill_9_during_execute_st_reruns_only_the_sandbox_step(
    spawn: Callable[..., KodoProcess], engine: sa.Engine
) -> None:
    """kill -9 while sandbox tasks run; after restart the run succeeds, earlier steps stay at attempt 1."""
    up = spawn("up", CHAOS_SLEEP_EXECUTE="2500")
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    intent = httpx.post(f"{base}/api/intents", json={"goal": "chaos", "inputs": {}, "constraints": {}}).json()[
        "intentId"
    ]
    body = {
        "intentId": intent,
        "queuePartitionKey": "chaos",
        "autoApprove": True,
        "workload": {"concurrency": 1, "steps": 2, "sandboxMinutes": 1},
    }
    assert httpx.post(f"{base}/api/runs", json=body).status_code == 201

    def children_running() -> bool:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    sa.text("SELECT count(*) FROM dbos.workflow_status WHERE name='ExecuteTask' AND status='PENDING'")
                ).scalar_one()
                >= 1
            )

    wait_until(children_running, timeout=30, what="ExecuteTask running")
    up.kill9()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM app.sbx_runs")).scalar_one() == 0
    up.start()
    wait_until(lambda: httpx.get(f"{base}/api/runs/{intent}").json()["status"] == "SUCCESS", timeout=60, what="SUCCESS")
    with engine.connect() as conn:
        attempts = dict(conn.execute(sa.text("SELECT step_id, max(attempt) FROM app.run_steps GROUP BY step_id")).all())
        sandbox_rows = conn.execute(sa.text("SELECT count(*) FROM app.sbx_runs")).scalar_one()
        assert oracle_violations(conn) == {}
    assert attempts == {"CompileST": 1, "ApplyPatchST": 1, "DecideST": 1, "ExecuteST": 1}
    assert sandbox_rows == 2


def test_kill_9_while_runs_wait_at_their_gates(spawn: Callable[..., KodoProcess], engine: sa.Engine) -> None:
    """kill -9 with runs parked (some just answered): after restart every run finishes, one gate row each."""
    up = spawn("up")
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    wids = []
    for n in range(6):
        intent = httpx.post(f"{base}/api/intents", json={"goal": f"wait {n}", "inputs": {}, "constraints": {}})
        wid = intent.json()["intentId"]
        assert httpx.post(f"{base}/api/runs", json={"intentId": wid, "queuePartitionKey": "one"}).status_code == 201
        wids.append(wid)
    for wid in wids:
        wait_until(lambda wid=wid: httpx.get(f"{base}/api/runs/{wid}").json()["status"] == "WAITING_INPUT", timeout=60)
    for wid in wids[:3]:  # answered just before the crash: the reply is in the ledger, the resume not yet run
        assert httpx.post(f"{base}/api/runs/{wid}/approve-plan", json={"approvedBy": "a"}).status_code == 202
    up.kill9()
    up.start()
    for wid in wids[3:]:
        assert httpx.post(f"{base}/api/runs/{wid}/approve-plan", json={"approvedBy": "b"}).status_code == 202
    for wid in wids:
        wait_until(lambda wid=wid: httpx.get(f"{base}/api/runs/{wid}").json()["status"] == "SUCCESS", timeout=60)
    with engine.connect() as conn:
        gates = dict(conn.execute(sa.text("SELECT run_id, count(*) FROM app.human_gates GROUP BY run_id")).all())
        assert oracle_violations(conn) == {}
    assert len(gates) == 6 and set(gates.values()) == {1}
