"""What an operator following the runbooks tripped on (issue #20): artifact media types, the question card."""

from __future__ import annotations

from fastapi.testclient import TestClient

from helpers import wait_status, wait_until


def _start(client: TestClient, goal: str) -> str:
    intent = client.post("/api/intents", json={"goal": goal, "inputs": {}, "constraints": {}}).json()["intentId"]
    response = client.post("/api/runs", json={"intentId": intent, "queuePartitionKey": "trips"})
    assert response.status_code == 201, response.text
    return str(intent)


def test_step_rows_give_json_artifacts_the_json_media_type(client: TestClient) -> None:
    """GET /api/runs/{wid}/steps lists CompileST's plan_card ref as application/json, not text/plain."""
    wid = _start(client, "ask about mime")
    wait_status(client, wid, {"WAITING_INPUT"})
    refs = wait_until(
        lambda: [ref for step in client.get(f"/api/runs/{wid}/steps").json() for ref in step["artifactRefs"]] or None,
        what="artifact refs",
    )
    mimes = {ref["kind"]: ref["mime"] for ref in refs}
    assert mimes["plan_card"] == "application/json"


def test_question_card_shows_the_question(client: TestClient) -> None:
    """A run waiting at ANSWER_QUESTION carries the agent's question in its gate prompt and shows it on the page."""
    wid = _start(client, "ask the operator")
    waiting = wait_status(client, wid, {"WAITING_INPUT"})
    assert waiting["nextAction"] == "ANSWER_QUESTION"
    gate = next(g for g in client.get(f"/api/runs/{wid}/gates").json() if g["purpose"] == "ask-user")
    question = gate["prompt"]["formSchema"]["description"]
    assert "ask the operator" in question
    assert question in client.get(f"/ui/runs/{wid}/panel").text
