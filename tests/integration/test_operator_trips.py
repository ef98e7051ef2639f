"""What an operator following the runbooks tripped on (issue #20): artifact media types, the question card."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
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


def _runbook_sql(fragment: str) -> str:
    """The runbook's own query (``sql_app "…"``) containing ``fragment``, exactly as written."""
    text = (Path(__file__).parents[2] / "docs" / "runbook.md").read_text()
    line = next(line for line in text.splitlines() if line.startswith('sql_app "') and fragment in line)
    return line.removeprefix('sql_app "').rsplit('"', 1)[0]


def test_runbook_sql_by_workflow_id_finds_receipts_and_ops_audit(client: TestClient, engine: sa.Engine) -> None:
    """The runbook's receipt and OPS-audit queries by workflow id (as written in docs/runbook.md) find the rows."""
    wid = _start(client, "receipts by workflow id")
    waiting = wait_status(client, wid, {"WAITING_INPUT"})
    action = {"actor": "fde", "reason": "runbook"}
    assert client.post(f"/api/ops/wf/{wid}/cancel", json=action).status_code == 202
    assert client.post(f"/api/ops/wf/{wid}/resume", json=action).status_code == 202
    wait_status(client, wid, {"WAITING_INPUT"})
    assert client.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    assert wait_status(client, wid, {"SUCCESS", "ERROR", "CANCELLED"})["status"] == "SUCCESS"
    receipts = _runbook_sql("FROM app.mock_receipts WHERE workflow_id").replace("$WID", wid)
    audit = _runbook_sql("step_id='OPS' AND workflow_id").replace("$WID", wid)
    with engine.connect() as conn:
        seen = [row[0] for row in conn.execute(sa.text(receipts))]
        ops = [row[0] for row in conn.execute(sa.text(audit))]
        by_run_id = conn.execute(
            sa.text("SELECT count(*) FROM app.mock_receipts WHERE run_id = :r"), {"r": waiting["runId"]}
        ).scalar_one()
    assert seen and seen == [1] * len(seen) and len(seen) == by_run_id
    assert ops == ["cancel", "resume"]
