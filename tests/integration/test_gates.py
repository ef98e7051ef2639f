"""Human gates: ask-user and plan gates, replies, idempotency, timeouts, escalation, retry/repair."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import oracle_violations, table_counts, wait_status, wait_until

TERMINAL = {"SUCCESS", "ERROR", "CANCELLED"}


def new_run(client: TestClient, goal: str, **fields: Any) -> str:
    constraints = fields.pop("constraints", {})
    intent = client.post("/api/intents", json={"goal": goal, "inputs": {}, "constraints": constraints}).json()
    response = client.post("/api/runs", json={"intentId": intent["intentId"], "queuePartitionKey": "hitl", **fields})
    assert response.status_code == 201, response.text
    return str(intent["intentId"])


def open_gate(client: TestClient, wid: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        gates = client.get(f"/api/runs/{wid}/gates").json()
        return next((g for g in gates if g["state"] == "PENDING"), None)

    gate = dict(wait_until(check, what=f"open gate of {wid}"))
    # The run has parked once its delayed continuation exists, right after the gate row.
    wait_until(lambda: client.get(f"/api/runs/{wid}").json()["dbosStatus"] == "DELAYED", what="parked")
    return gate


def reply(client: TestClient, wid: str, gate: str, payload: dict[str, Any], key: str = "k1") -> Any:
    body = {"payload": payload, "dedupeKey": key, "origin": "manual"}
    return client.post(f"/api/runs/{wid}/gates/{gate}/reply", json=body)


def test_ask_user_lane_waits_then_succeeds_via_legacy_events(client: TestClient) -> None:
    """A goal with "ask" parks at the ask gate (ANSWER_QUESTION); a legacy event answers it; then the plan gate."""
    wid = new_run(client, "ask user")
    waiting = wait_status(client, wid, {"WAITING_INPUT"})
    assert waiting["nextAction"] == "ANSWER_QUESTION" and waiting["lastStep"] == "CompileST"
    answered = client.post(f"/runs/{wid}/events", json={"type": "input", "payload": {"answer": "42"}})
    assert answered.status_code == 202 and answered.json()["accepted"] is True
    plan_gate = wait_status(client, wid, {"WAITING_INPUT"} | TERMINAL)
    wait_until(lambda: client.get(f"/api/runs/{wid}").json()["nextAction"] == "APPROVE_PLAN", what="plan gate")
    assert plan_gate["status"] == "WAITING_INPUT"
    assert client.post(f"/runs/{wid}/events", json={"type": "approve-plan", "payload": {}}).status_code == 202
    done = wait_status(client, wid, TERMINAL)
    assert done["status"] == "SUCCESS", done
    ask = next(g for g in client.get(f"/api/runs/{wid}/gates").json() if g["purpose"] == "ask-user")
    assert ask["result"]["payload"] == {"type": "input", "payload": {"answer": "42"}}


def test_event_before_the_run_waits_is_409_and_writes_nothing(client: TestClient, engine: sa.Engine) -> None:
    """The legacy event route answers 409 (with the status) unless the run is waiting_input."""
    wid = new_run(client, "ask fast", autoApprove=True)
    wait_status(client, wid, TERMINAL | {"WAITING_INPUT"})
    done = client.post(f"/runs/{wid}/events", json={"type": "approve-plan", "payload": {}})
    header = client.get(f"/api/runs/{wid}").json()
    if header["status"] == "WAITING_INPUT":  # the ask gate: answer it, then try again once the run is done
        assert done.status_code == 202
        wait_status(client, wid, TERMINAL)
    with engine.connect() as conn:
        before = table_counts(conn)
    late = client.post(f"/runs/{wid}/events", json={"type": "too_soon", "payload": {}})
    assert late.status_code == 409 and late.json()["status"] == "succeeded"
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_concurrent_duplicate_replies_make_one_ledger_row(client: TestClient, engine: sa.Engine) -> None:
    """Five concurrent replies with one dedupeKey: one ledger row, one replay answer per duplicate, one decision."""
    wid = new_run(client, "dupes")
    gate = open_gate(client, wid)
    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda _: reply(client, wid, gate["gateKey"], {"choice": "yes"}, "same"), range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert sorted(a.json()["isReplay"] for a in answers) == [False, True, True, True, True]
    assert wait_status(client, wid, TERMINAL)["status"] == "SUCCESS"
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM app.human_interactions WHERE dedupe_key='same'")).scalar()
        assert rows == 1 and oracle_violations(conn) == {}


def test_reply_errors_and_late_replies(client: TestClient, engine: sa.Engine) -> None:
    """Bad gate key/body → 400; unknown gate/run → 404; dedupe drift and replies after the end → 409; no writes."""
    wid = new_run(client, "errors")
    gate = open_gate(client, wid)["gateKey"]
    with engine.connect() as conn:
        before = table_counts(conn)
    assert client.post(f"/api/runs/{wid}/gates/BAD/reply", json={}).status_code == 400
    assert client.post(f"/api/runs/{wid}/gates/{gate}/reply", json={"payload": {}}).status_code == 400
    bad_origin = {"payload": {}, "dedupeKey": "x", "origin": "martian"}
    assert client.post(f"/api/runs/{wid}/gates/{gate}/reply", json=bad_origin).status_code == 400
    assert reply(client, wid, "approve-plan-0000000000000000", {"choice": "yes"}).status_code == 404
    assert reply(client, "run_missing", gate, {"choice": "yes"}).status_code == 404
    assert client.get(f"/api/runs/{wid}/gates/{gate}?timeoutS=31").status_code == 400
    assert client.get(f"/api/runs/{wid}/gates/{gate}?timeoutS=x").status_code == 400
    assert client.get(f"/api/runs/{wid}/gates/approve-plan-0000000000000000").status_code == 404
    with engine.connect() as conn:
        assert table_counts(conn) == before
    assert reply(client, wid, gate, {"choice": "yes"}, "one").status_code == 200
    drift = reply(client, wid, gate, {"choice": "no"}, "one")
    assert drift.status_code == 409 and "dedupeKey" in drift.json()["error"]
    wait_status(client, wid, TERMINAL)
    with engine.connect() as conn:
        before = table_counts(conn)
    late = reply(client, wid, gate, {"choice": "yes"}, "two")
    assert late.status_code == 409
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_long_poll_returns_when_the_gate_resolves(client: TestClient) -> None:
    """GET gate ?timeoutS= waits (bounded) and returns RESOLVED once a reply arrives meanwhile."""
    wid = new_run(client, "long poll")
    gate = open_gate(client, wid)["gateKey"]
    pending = client.get(f"/api/runs/{wid}/gates/{gate}?timeoutS=0").json()
    assert pending["state"] == "PENDING" and pending["prompt"]["ttlS"] == 3600
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(client.get, f"/api/runs/{wid}/gates/{gate}?timeoutS=20")
        assert reply(client, wid, gate, {"choice": "yes", "rationale": "lgtm"}).status_code == 200
        view = waiting.result(timeout=25).json()
    assert view["state"] == "RESOLVED" and view["decision"]["decision"] == "yes"
    assert view["decision"]["rationale"] == "lgtm"


def test_inbox_lists_waiting_gates_with_sla(client: TestClient) -> None:
    """The inbox shows each waiting run's open gate with deadline and SLA state."""
    wid = new_run(client, "inbox")
    gate = open_gate(client, wid)["gateKey"]
    rows = client.get("/api/hitl/inbox").json()
    row = next(r for r in rows if r["workflowID"] == wid)
    assert row["gateKey"] == gate and row["slaStatus"] == "NORMAL" and row["mismatchRisk"] is False
    assert client.get("/api/hitl/inbox?limit=0").status_code == 400


def test_gate_timeout_escalates_once_and_fails_the_run(client: TestClient, engine: sa.Engine) -> None:
    """A 2 s TTL: the gate resolves TIMED_OUT, decision no, one escalation workflow and artifact; run REPAIR."""
    wid = new_run(client, "slow human", constraints={"planApprovalTimeoutS": 2})
    gate = open_gate(client, wid)["gateKey"]
    done = wait_status(client, wid, TERMINAL, timeout=30)
    assert done["status"] == "ERROR" and done["error"]["code"] == "GATE_TIMEOUT" and done["nextAction"] == "REPAIR"
    view = client.get(f"/api/runs/{wid}/gates/{gate}").json()
    assert view["state"] == "TIMED_OUT" and view["decision"]["decision"] == "no"

    def escalated() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text("SELECT count(*) FROM app.artifacts WHERE step_id='EscalateTimeout' AND task_key=:g"),
                    {"g": gate},
                ).scalar_one()
            )

    wait_until(escalated, what="escalation artifact")
    with engine.connect() as conn:
        flows = conn.execute(
            sa.text("SELECT count(*) FROM dbos.workflow_status WHERE workflow_uuid = :w"), {"w": f"esc:{wid}:{gate}"}
        ).scalar_one()
        assert flows == 1 and escalated() == 1
    assert reply(client, wid, gate, {"choice": "yes"}).status_code == 409


def test_retry_envelope_and_second_retry_really_runs(client: TestClient, engine: sa.Engine) -> None:
    """FAIL_ME → retries_exceeded; /retry → 202 {accepted, newRunId, fromStep: ExecuteST}; each retry runs anew."""
    wid = new_run(client, "fail me", autoApprove=True)
    failed = wait_status(client, wid, TERMINAL)
    assert failed["durableStatus"] == "retries_exceeded" and failed["retryCount"] == 0
    run_id = failed["runId"]
    assert client.post(f"/runs/{run_id}/retry").json() == {
        "accepted": True,
        "newRunId": run_id,
        "fromStep": "ExecuteST",
        "repairWorkflowId": f"repair:{wid}:1",
    }
    wait_until(lambda: client.get(f"/api/runs/{wid}").json()["retryCount"] == 1, what="retry count")
    again = wait_status(client, wid, TERMINAL)
    assert again["durableStatus"] == "retries_exceeded" and again["error"]["code"] == "CMD_NONZERO", again["error"]
    second = client.post(f"/runs/{wid}/retry")
    assert second.status_code == 202 and second.json()["repairWorkflowId"] == f"repair:{wid}:2"
    wait_until(lambda: client.get(f"/api/runs/{wid}").json()["retryCount"] == 2, what="second retry")
    wait_status(client, wid, TERMINAL)

    def repair_ended() -> bool:  # the run row ends inside the repair's fail transaction; its workflow just after
        with engine.connect() as conn:
            status = conn.execute(
                sa.text("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = :w"), {"w": f"repair:{wid}:2"}
            ).scalar_one()
        return status not in {"PENDING", "ENQUEUED"}

    wait_until(repair_ended, what="second repair workflow ended")
    with engine.connect() as conn:
        executions = (
            conn.execute(sa.text("SELECT attempt FROM app.run_steps WHERE step_id='ExecuteST' ORDER BY attempt"))
            .scalars()
            .all()
        )
        compiles = conn.execute(sa.text("SELECT count(*) FROM app.run_steps WHERE step_id='CompileST'")).scalar()
        assert oracle_violations(conn) == {}
    assert executions == [1, 2, 3] and compiles == 1


def test_retry_is_409_unless_failed(client: TestClient, engine: sa.Engine) -> None:
    """Retrying a waiting or successful run is 409 with its status, and writes nothing."""
    wid = new_run(client, "not failed")
    open_gate(client, wid)
    with engine.connect() as conn:
        before = table_counts(conn)
    response = client.post(f"/runs/{wid}/retry")
    assert response.status_code == 409 and response.json()["status"] == "waiting_input"
    assert client.post("/runs/run_missing/retry").status_code == 404
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_repair_after_rejection_reopens_the_plan_gate(client: TestClient) -> None:
    """A rejected plan, retried: the repair re-opens a new plan gate, and a "yes" there finishes the run."""
    wid = new_run(client, "reject then fix")
    first = open_gate(client, wid)
    assert reply(client, wid, first["gateKey"], {"choice": "no"}).status_code == 200
    assert wait_status(client, wid, TERMINAL)["error"]["code"] == "PLAN_REJECTED"
    retried = client.post(f"/runs/{wid}/retry").json()
    assert retried["fromStep"] == "DecideST"
    second = wait_until(
        lambda: next(
            (
                g
                for g in client.get(f"/api/runs/{wid}/gates").json()
                if g["state"] == "PENDING" and g["gateKey"] != first["gateKey"]
            ),
            None,
        ),
        what="a new plan gate",
    )
    assert second["generation"] == 2
    assert reply(client, wid, second["gateKey"], {"decision": "approve"}).status_code == 200
    assert wait_status(client, wid, TERMINAL)["status"] == "SUCCESS"


def test_external_event_route(client: TestClient) -> None:
    """POST /api/events/hitl answers a gate; a mismatching human topic is 409; sys topics are only ledgered."""
    wid = new_run(client, "external")
    gate = open_gate(client, wid)["gateKey"]
    base = {
        "workflowId": wid,
        "gateKey": gate,
        "payload": {"choice": "yes"},
        "dedupeKey": "ci-1",
        "origin": "webhook-ci",
    }
    assert client.post("/api/events/hitl", json={**base, "topic": "human:other"}).status_code == 409
    assert client.post("/api/events/hitl", json={**base, "topic": "sys:note", "dedupeKey": "s"}).status_code == 200
    assert client.post("/api/events/hitl", json={**base, "topic": f"human:{gate}"}).status_code == 200
    assert wait_status(client, wid, TERMINAL)["status"] == "SUCCESS"
    interactions = client.get(f"/api/runs/{wid}/interactions").json()
    assert {i["topic"] for i in interactions} == {"sys:note", f"human:{gate}"}


def test_plans_approved_the_moment_they_appear_all_finish(client: TestClient, engine: sa.Engine) -> None:
    """Approvals racing the park (sent as soon as the gate row exists) are never lost until the TTL."""
    wids = [new_run(client, f"race {n}") for n in range(12)]
    pending = set(wids)
    approved: set[str] = set()
    deadline = time.monotonic() + 60
    while pending - approved:
        assert time.monotonic() < deadline, f"no plan gate for {pending - approved}"
        for wid in list(pending - approved):
            if any(g["state"] == "PENDING" for g in client.get(f"/api/runs/{wid}/gates").json()):
                assert client.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "race"}).status_code == 202
                approved.add(wid)
    for wid in wids:  # the TTL is an hour: a lost wake-up would time the test out
        assert wait_status(client, wid, TERMINAL)["status"] == "SUCCESS", wid
    with engine.connect() as conn:
        assert oracle_violations(conn) == {}
