"""The run workflow end to end, in process: real Postgres, real DBOS worker, the monolith's API."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import oracle_violations, table_counts, wait_status
from kodo.settings import Settings

TERMINAL = {"SUCCESS", "ERROR", "CANCELLED"}


def new_intent(client: TestClient, goal: str = "demo chain", **constraints: Any) -> str:
    response = client.post("/api/intents", json={"goal": goal, "inputs": {}, "constraints": constraints})
    assert response.status_code == 201, response.text
    return str(response.json()["intentId"])


def start(client: TestClient, intent: str, **fields: Any) -> dict[str, Any]:
    body = {"intentId": intent, "queuePartitionKey": "tenant-a", **fields}
    response = client.post("/api/runs", json=body)
    assert response.status_code in {200, 201}, response.text
    return dict(response.json())


def test_golden_path_waits_for_approval_then_succeeds(client: TestClient, engine: sa.Engine) -> None:
    """A run parks at the plan gate (WAITING_INPUT/APPROVE_PLAN) and succeeds after approve-plan, each step once."""
    intent = new_intent(client, "golden")
    header = start(client, intent, workload={"concurrency": 1, "steps": 2, "sandboxMinutes": 1})
    assert header["workflowID"] == intent and header["isReplay"] is False and header["status"] == "ENQUEUED"
    waiting = wait_status(client, intent, {"WAITING_INPUT"})
    assert waiting["nextAction"] == "APPROVE_PLAN" and waiting["lastStep"] == "ApplyPatchST"
    approved = client.post(f"/api/runs/{intent}/approve-plan", json={"approvedBy": "po-007", "notes": "ship it"})
    assert approved.status_code == 202 and approved.json()["accepted"] is True
    done = wait_status(client, intent, TERMINAL)
    assert done["status"] == "SUCCESS" and done["durableStatus"] == "succeeded" and done["lastStep"] == "ExecuteST"
    assert done["nextAction"] is None and done["retryCount"] == 0
    by_run_id = client.get(f"/api/runs/{header['runId']}").json()
    assert by_run_id["workflowID"] == intent
    rows = client.get(f"/api/runs/{intent}/steps").json()
    assert [r["stepID"] for r in rows] == ["CompileST", "ApplyPatchST", "DecideST", "ExecuteST"]
    assert all(r["attempt"] == 1 and r["artifactRefs"] for r in rows)
    view = client.get(f"/runs/{header['runId']}").json()
    assert view["status"] == "succeeded" and view["steps"][0]["stepId"] == "CompileST"
    with engine.connect() as conn:
        assert oracle_violations(conn) == {}
        assert conn.execute(sa.text("SELECT count(*) FROM app.sbx_runs")).scalar_one() == 2
        assert conn.execute(sa.text("SELECT seen_count FROM app.mock_receipts")).scalar_one() == 1


def test_artifacts_resolve_by_encoded_uri(client: TestClient) -> None:
    """Every artifact ref of a finished run resolves through GET /api/artifacts/{encoded uri}."""
    from urllib.parse import quote

    intent = new_intent(client)
    start(client, intent, autoApprove=True, workload={"concurrency": 1, "steps": 1, "sandboxMinutes": 1})
    wait_status(client, intent, TERMINAL)
    refs = [ref for row in client.get(f"/api/runs/{intent}/steps").json() for ref in row["artifactRefs"]]
    assert refs
    for ref in refs:
        response = client.get("/api/artifacts/" + quote(ref["id"], safe=""))
        assert response.status_code == 200, ref
        assert response.headers["x-artifact-sha256"] == ref["sha256"]
    stdout = next(ref for ref in refs if ref["kind"] == "stdout")
    assert client.get("/api/artifacts/" + quote(stdout["id"], safe="")).text == "OK: echo test0\n"


def test_auto_approve_records_an_automatic_decision(client: TestClient, engine: sa.Engine) -> None:
    """autoApprove skips the human gate but records the decision (actor auto) in the interaction ledger."""
    intent = new_intent(client)
    start(client, intent, autoApprove=True)
    assert wait_status(client, intent, TERMINAL)["status"] == "SUCCESS"
    with engine.connect() as conn:
        origins = conn.execute(sa.text("SELECT origin FROM app.human_interactions")).scalars().all()
    assert origins == ["auto"]


def test_fail_me_ends_retries_exceeded_with_repair(client: TestClient, engine: sa.Engine) -> None:
    """A failing test command ends the run retries_exceeded + REPAIR with a structured error, ExecuteST kept."""
    intent = new_intent(client, "please fail me")
    start(client, intent, autoApprove=True)
    done = wait_status(client, intent, TERMINAL)
    assert done["status"] == "ERROR" and done["durableStatus"] == "retries_exceeded"
    assert done["nextAction"] == "REPAIR" and done["retryCount"] == 0
    assert done["error"] == {"code": "CMD_NONZERO", "message": "SBX execution failed [CMD_NONZERO]"}
    assert done["lastStep"] == "ExecuteST"
    with engine.connect() as conn:
        assert oracle_violations(conn) == {}


def test_infra_failures_retry_three_times_then_fail(client: TestClient, engine: sa.Engine) -> None:
    """INFRA_FAIL is retried (3 attempts, each with its sbx_runs row) and the run fails without ExecuteST."""
    intent = new_intent(client, "infra", testCommand="INFRA_FAIL")
    start(client, intent, autoApprove=True)
    done = wait_status(client, intent, TERMINAL, timeout=60)
    assert done["status"] == "ERROR" and done["nextAction"] == "REPAIR"
    assert done["error"]["code"] == "SBX_RETRIES_EXHAUSTED" and "BOOT_FAIL" in done["error"]["message"]
    with engine.connect() as conn:
        attempts = conn.execute(sa.text("SELECT attempt FROM app.sbx_runs ORDER BY attempt")).scalars().all()
        executed = conn.execute(sa.text("SELECT count(*) FROM app.run_steps WHERE step_id='ExecuteST'")).scalar_one()
    assert attempts == [1, 2, 3] and executed == 0


def test_flaky_infrastructure_succeeds_on_the_third_attempt(client: TestClient, engine: sa.Engine) -> None:
    """FLAKY_INFRA_FAIL fails twice, then the third attempt succeeds and the run succeeds."""
    intent = new_intent(client, "flaky", testCommand="FLAKY_INFRA_FAIL")
    start(client, intent, autoApprove=True)
    assert wait_status(client, intent, TERMINAL, timeout=60)["status"] == "SUCCESS"
    with engine.connect() as conn:
        codes = conn.execute(sa.text("SELECT err_code FROM app.sbx_runs ORDER BY attempt")).scalars().all()
    assert codes == ["BOOT_FAIL", "BOOT_FAIL", "NONE"]


def test_approval_sent_before_the_gate_opens_is_409(client: TestClient, engine: sa.Engine) -> None:
    """An approve-plan on a run that is not waiting at its plan gate (here: parked at its ask-user gate first)
    is a 409 and writes nothing; decisions are never recorded ahead of their gate."""
    intent = new_intent(client, "please ask me first")
    start(client, intent)
    waiting = wait_status(client, intent, {"WAITING_INPUT"})
    assert waiting["nextAction"] == "ANSWER_QUESTION"
    with engine.connect() as conn:
        before = table_counts(conn)
    early = client.post(f"/api/runs/{intent}/approve-plan", json={"approvedBy": "early"})
    assert early.status_code == 409 and "not waiting at its plan gate" in early.json()["error"]
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_ten_parallel_starts_make_one_run(client: TestClient, engine: sa.Engine) -> None:
    """10 concurrent starts of one intent: one 201, nine 200 replays, one run row, one workflow."""
    intent = new_intent(client)
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(
            pool.map(
                lambda _: client.post(
                    "/api/runs", json={"intentId": intent, "queuePartitionKey": "p", "traceId": "idem"}
                ),
                range(10),
            )
        )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 9 + [201]
    assert sum(r.json()["isReplay"] for r in responses) == 9
    with engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT count(*) FROM app.runs WHERE workflow_id = :w"), {"w": intent}).scalar_one()
        flows = conn.execute(
            sa.text("SELECT count(*) FROM dbos.workflow_status WHERE workflow_uuid = :w"), {"w": intent}
        ).scalar_one()
    assert runs == 1 and flows == 1


def test_identity_drift_is_a_conflict(client: TestClient) -> None:
    """A second start of the same intent with a different traceId is 409 with a drift list."""
    intent = new_intent(client)
    start(client, intent, traceId="one")
    response = client.post("/api/runs", json={"intentId": intent, "queuePartitionKey": "tenant-a", "traceId": "two"})
    assert response.status_code == 409
    assert response.json()["drift"] == [{"field": "trace_id", "existing": "one", "incoming": "two"}]


def test_legacy_run_route_starts_and_reads_the_run_view(client: TestClient) -> None:
    """POST /intents/{id}/run answers 202 {runId, workflowId}; GET /runs/{id} serves the RunView."""
    response = client.post("/intents", json={"goal": "legacy", "inputs": {}, "constraints": {}})
    intent = response.json()["intentId"]
    started = client.post(f"/intents/{intent}/run", json={"traceId": "po-demo", "recipeName": "compile-default"})
    assert started.status_code == 202 and started.headers["deprecation"] == "true"
    run_id = started.json()["runId"]
    assert started.json()["workflowId"] == intent
    again = client.post(f"/intents/{intent}/run", json={"traceId": "po-demo", "recipeName": "compile-default"})
    assert again.status_code == 202 and again.json()["runId"] == run_id
    wait_status(client, intent, {"WAITING_INPUT"})
    assert client.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    wait_status(client, intent, TERMINAL)
    view = client.get(f"/runs/{run_id}").json()
    assert view["status"] == "succeeded" and view["workflowId"] == intent and view["retryCount"] == 0


def test_patch_plan_applies_in_the_workspace(client: TestClient, settings: Settings) -> None:
    """A planned patch writes its postimage into the run's workspace and is recorded in patch_history."""
    patch = [{"targetPath": "notes/hello.txt", "postimageContent": "hello\n", "diffText": "+hello"}]
    intent = new_intent(client, "patch it", patchPlan=patch)
    header = start(client, intent, autoApprove=True)
    assert wait_status(client, intent, TERMINAL)["status"] == "SUCCESS"
    target = Path(settings.workspaces_dir, header["runId"], "notes/hello.txt")
    assert target.read_text() == "hello\n"


def test_patch_outside_the_workspace_is_refused(client: TestClient, settings: Settings) -> None:
    """A patch whose path escapes the workspace fails the run with PATCH_PATH_NOT_ALLOWED and writes nothing."""
    patch = [{"targetPath": "../../escape.txt", "postimageContent": "x", "diffText": "+x"}]
    intent = new_intent(client, "escape", patchPlan=patch)
    start(client, intent, autoApprove=True)
    done = wait_status(client, intent, TERMINAL)
    assert done["status"] == "ERROR" and done["error"]["code"] == "PATCH_PATH_NOT_ALLOWED"
    assert not (settings.workspaces_dir.parent / "escape.txt").exists()


def test_plan_rejection_rolls_patches_back(client: TestClient, settings: Settings) -> None:
    """A "no" at the plan gate restores every applied patch and ends the run PLAN_REJECTED + REPAIR."""
    patch = [{"targetPath": "a.txt", "postimageContent": "after", "diffText": "+after"}]
    intent = new_intent(client, "reject me", patchPlan=patch)
    header = start(client, intent)
    wait_status(client, intent, {"WAITING_INPUT"})
    target = Path(settings.workspaces_dir, header["runId"], "a.txt")
    assert target.read_text() == "after"
    gate = client.get(f"/api/runs/{intent}/gates").json()[0]
    assert gate["purpose"] == "approve-plan" and gate["state"] == "PENDING"
    answer = {"payload": {"choice": "no", "rationale": "not now"}, "dedupeKey": "po-1", "origin": "manual"}
    response = client.post(f"/api/runs/{intent}/gates/{gate['gateKey']}/reply", json=answer)
    assert response.status_code == 200 and response.json() == {"ok": True, "isReplay": False}
    done = wait_status(client, intent, TERMINAL)
    assert done["error"]["code"] == "PLAN_REJECTED" and "not now" in done["error"]["message"]
    assert done["nextAction"] == "REPAIR"
    assert not target.exists()  # the run created the file, so its rollback deletes it


def test_a_route_waiting_on_the_database_leaves_the_others_answering(client: TestClient, engine: sa.Engine) -> None:
    """An approve-plan blocked on its run's row lock does not stall the event loop: /healthz and a run
    header still answer while it waits, and the approval lands once the lock is released."""
    intent = new_intent(client, "blocked approval")
    start(client, intent)
    wait_status(client, intent, {"WAITING_INPUT"})
    with ThreadPoolExecutor(2) as pool, engine.connect() as holder:
        holder.execute(sa.text("SELECT id FROM app.runs WHERE workflow_id = :w FOR UPDATE"), {"w": intent})
        try:
            approval = pool.submit(client.post, f"/api/runs/{intent}/approve-plan", json={"approvedBy": "po"})
            blocked = wait_for_lock_waiter(engine)
            health = pool.submit(client.get, "/healthz").result(timeout=10)
            header = client.get(f"/api/runs/{intent}")
            assert blocked and not approval.done()
            assert health.status_code == 200 and header.status_code == 200
        finally:
            holder.rollback()
        assert approval.result(timeout=30).status_code == 202
    assert wait_status(client, intent, TERMINAL)["status"] == "SUCCESS"


def wait_for_lock_waiter(engine: sa.Engine, timeout: float = 10) -> bool:
    """Whether some session is waiting on a lock (the blocked route) within ``timeout`` seconds."""
    query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(query).scalar_one() > 0:
                return True
        time.sleep(0.05)
    return False
