"""Re-sent answers and repeated gate replies: replays, never new decisions (issue #20 items 1 and 2)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import table_counts, wait_status, wait_until

TERMINAL = {"SUCCESS", "ERROR", "CANCELLED"}


def new_run(client: TestClient, goal: str) -> str:
    intent = client.post("/api/intents", json={"goal": goal, "inputs": {}, "constraints": {}}).json()
    response = client.post("/api/runs", json={"intentId": intent["intentId"], "queuePartitionKey": "hitl"})
    assert response.status_code == 201, response.text
    return str(intent["intentId"])


def open_gate(client: TestClient, wid: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        return next((g for g in client.get(f"/api/runs/{wid}/gates").json() if g["state"] == "PENDING"), None)

    gate = dict(wait_until(check, what=f"open gate of {wid}"))
    wait_until(lambda: client.get(f"/api/runs/{wid}").json()["dbosStatus"] == "DELAYED", what="parked")
    return gate


def reply(client: TestClient, wid: str, gate: str, payload: dict[str, Any], key: str = "k1") -> Any:
    body = {"payload": payload, "dedupeKey": key, "origin": "manual"}
    return client.post(f"/api/runs/{wid}/gates/{gate}/reply", json=body)


def _plan_gate_waiting(client: TestClient, wid: str) -> dict[str, Any]:
    wait_until(lambda: client.get(f"/api/runs/{wid}").json()["nextAction"] == "APPROVE_PLAN", what="plan gate")
    return open_gate(client, wid)


def test_resent_answer_is_a_replay_not_a_plan_rejection(client: TestClient, engine: sa.Engine) -> None:
    """The identical legacy event sent again once the plan gate is open is a replay: no write, the plan stays open."""
    wid = new_run(client, "ask user")
    wait_status(client, wid, {"WAITING_INPUT"})
    event = {"type": "input", "payload": {"answer": "42"}}
    first = client.post(f"/runs/{wid}/events", json=event)
    assert first.status_code == 202 and first.json()["isReplay"] is False
    plan = _plan_gate_waiting(client, wid)
    with engine.connect() as conn:
        before = table_counts(conn)
    again = client.post(f"/runs/{wid}/events", json=event)
    assert again.status_code == 202 and again.json()["isReplay"] is True
    assert again.json()["gateKey"] != plan["gateKey"]
    with engine.connect() as conn:
        assert table_counts(conn) == before
    assert client.get(f"/api/runs/{wid}/gates/{plan['gateKey']}").json()["state"] == "PENDING"
    assert client.post(f"/runs/{wid}/events", json={"type": "approve-plan", "payload": {}}).status_code == 202
    assert wait_status(client, wid, TERMINAL)["status"] == "SUCCESS"


def test_non_decision_to_the_plan_gate_is_400_with_zero_writes(client: TestClient, engine: sa.Engine) -> None:
    """An answer that is not a decision, sent to a decision gate by any route, is a 400 and writes nothing."""
    wid = new_run(client, "plan only")
    gate = open_gate(client, wid)["gateKey"]
    with engine.connect() as conn:
        before = table_counts(conn)
    legacy = client.post(f"/runs/{wid}/events", json={"type": "input", "payload": {"answer": "42"}})
    assert legacy.status_code == 400 and "decision" in legacy.json()["error"]
    assert reply(client, wid, gate, {"answer": "42"}).status_code == 400
    external = {"workflowId": wid, "gateKey": gate, "topic": f"human:{gate}", "payload": {"note": "hi"}}
    hitl = client.post("/api/events/hitl", json={**external, "dedupeKey": "x", "origin": "webhook"})
    assert hitl.status_code == 400
    with engine.connect() as conn:
        assert table_counts(conn) == before
    assert client.get(f"/api/runs/{wid}/gates/{gate}").json()["state"] == "PENDING"
    assert reply(client, wid, gate, {"decision": "maybe"}).status_code == 200  # a decision word: fails closed to no
    assert wait_status(client, wid, TERMINAL)["error"]["code"] == "PLAN_REJECTED"


def test_event_naming_its_gate_is_bound_to_that_gate(client: TestClient, engine: sa.Engine) -> None:
    """An event that names its gateKey answers that gate; naming a resolved or unknown gate is 409/404, no writes."""
    wid = new_run(client, "ask user")
    ask = open_gate(client, wid)["gateKey"]
    event = {"type": "input", "payload": {"answer": "7"}, "gateKey": ask}
    assert client.post(f"/runs/{wid}/events", json=event).status_code == 202
    plan = _plan_gate_waiting(client, wid)["gateKey"]
    with engine.connect() as conn:
        before = table_counts(conn)
    stale = {"type": "input", "payload": {"answer": "8"}, "gateKey": ask}
    assert client.post(f"/runs/{wid}/events", json=stale).status_code == 409
    unknown = {"type": "approve-plan", "payload": {}, "gateKey": "approve-plan-0000000000000000"}
    assert client.post(f"/runs/{wid}/events", json=unknown).status_code == 404
    with engine.connect() as conn:
        assert table_counts(conn) == before
    named = {"type": "approve-plan", "payload": {}, "gateKey": plan}
    assert client.post(f"/runs/{wid}/events", json=named).status_code == 202
    assert wait_status(client, wid, TERMINAL)["status"] == "SUCCESS"


def test_repeated_reply_after_the_gate_resolved_is_a_replay(client: TestClient, engine: sa.Engine) -> None:
    """Same dedupeKey + payload → 200 isReplay even after the run ended; another payload → 409; no writes."""
    wid = new_run(client, "replay late")
    gate = open_gate(client, wid)["gateKey"]
    assert reply(client, wid, gate, {"choice": "yes"}, "po-1").json() == {"ok": True, "isReplay": False}
    assert wait_status(client, wid, TERMINAL)["status"] == "SUCCESS"
    with engine.connect() as conn:
        before = table_counts(conn)
    again = reply(client, wid, gate, {"choice": "yes"}, "po-1")
    assert again.status_code == 200 and again.json() == {"ok": True, "isReplay": True}
    assert reply(client, wid, gate, {"choice": "no"}, "po-1").status_code == 409
    assert reply(client, wid, gate, {"choice": "yes"}, "po-2").status_code == 409
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_the_same_event_after_a_retry_answers_the_new_generation(client: TestClient) -> None:
    """A replay is bound within one generation: after a retry, the same legacy event answers the re-opened gate."""
    wid = new_run(client, "reject twice")
    first = open_gate(client, wid)["gateKey"]
    no = {"type": "approve-plan", "payload": {"choice": "no"}}
    assert client.post(f"/runs/{wid}/events", json=no).json() == {"accepted": True, "isReplay": False, "gateKey": first}
    assert wait_status(client, wid, TERMINAL)["error"]["code"] == "PLAN_REJECTED"
    assert client.post(f"/runs/{wid}/retry").status_code == 202

    def reopened() -> dict[str, Any] | None:
        gates = client.get(f"/api/runs/{wid}/gates").json()
        return next((g for g in gates if g["state"] == "PENDING" and g["gateKey"] != first), None)

    second = wait_until(reopened, what="the re-opened plan gate")["gateKey"]
    wait_until(lambda: client.get(f"/api/runs/{wid}").json()["dbosStatus"] == "DELAYED", what="parked again")
    again = client.post(f"/runs/{wid}/events", json=no)
    assert again.status_code == 202 and again.json() == {"accepted": True, "isReplay": False, "gateKey": second}
    assert wait_status(client, wid, TERMINAL)["error"]["code"] == "PLAN_REJECTED"
