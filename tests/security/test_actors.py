"""Who decided: a human decision records the token's subject (never the name a body claims), or ``local``
without tokens; decisions are append-only, so a decision on a finished run is a 409 that writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import make_settings, table_counts, wait_status
from kodo.settings import Settings

APPROVER = "approver-acme-token-01"


def _run(client: TestClient, headers: dict[str, str], *, auto: bool = False) -> str:
    intent = client.post("/api/intents", json={"goal": "decide", "inputs": {}, "constraints": {}}, headers=headers)
    assert intent.status_code == 201, intent.text
    wid = str(intent.json()["intentId"])
    body = {"intentId": wid, "queuePartitionKey": "acme", "autoApprove": auto}
    assert client.post("/api/runs", json=body, headers=headers).status_code == 201
    return wid


class _As:
    def __init__(self, client: TestClient, headers: dict[str, str]) -> None:
        self.client, self.headers = client, headers

    def get(self, url: str) -> Any:
        return self.client.get(url, headers=self.headers)


def _ledger(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT actor, origin, payload FROM app.human_interactions ORDER BY created_at")
        ).all()
    return [tuple(row) for row in rows]


def test_decision_on_a_finished_run_is_409(client: TestClient, engine: sa.Engine) -> None:
    """approve-plan on a run that already SUCCEEDED (autoApprove) cannot rewrite who approved: 409, no write."""
    wid = _run(client, {}, auto=True)
    assert wait_status(client, wid, {"SUCCESS", "ERROR"})["status"] == "SUCCESS"
    with engine.connect() as conn:
        before = table_counts(conn)
    late = client.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "mallory", "notes": "after the fact"})
    assert late.status_code == 409 and "run is finished" in late.json()["error"]
    legacy = client.post(f"/runs/{wid}/approve-plan", json={"approvedBy": "mallory"})
    assert legacy.status_code == 409
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_second_approval_is_409_and_the_first_stands(client: TestClient, engine: sa.Engine) -> None:
    """Without tokens the actor is local:<name>; a second approval of the same gate is a 409 and changes nothing."""
    wid = _run(client, {})
    wait_status(client, wid, {"WAITING_INPUT"})
    first = client.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "po-007", "notes": "ship it"})
    assert first.status_code == 202, first.text
    again = client.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "mallory"})
    assert again.status_code == 409
    with engine.connect() as conn:
        approvers = conn.execute(sa.text("SELECT approved_by FROM app.plan_approvals")).scalars().all()
    assert approvers == ["local:po-007"]
    assert [(actor, origin) for actor, origin, _ in _ledger(engine)] == [("local:po-007", "legacy-approve")]
    assert wait_status(client, wid, {"SUCCESS", "ERROR"})["status"] == "SUCCESS"
    gate = client.get(f"/api/runs/{wid}/gates").json()[0]
    assert gate["decision"]["actor"] == "local:po-007"


@pytest.fixture
def token_settings(database_url: str, tmp_path: Path) -> Settings:
    tokens = [{"token": APPROVER, "subject": "anna", "tenant": "acme", "role": "approver"}]
    return make_settings(database_url, tmp_path / "home", KODO_API_TOKENS=json.dumps({"tokens": tokens}))


@pytest.fixture
def settings(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Settings:
    if "tokens" in request.node.name:
        return request.getfixturevalue("token_settings")  # type: ignore[no-any-return]
    return make_settings(database_url, tmp_path / "home")


def test_with_tokens_the_subject_is_the_actor_of_every_decision(client: TestClient, engine: sa.Engine) -> None:
    """A reply, an external event and an approval made with anna's token record anna, whatever the body claims."""
    auth = {"Authorization": f"Bearer {APPROVER}"}
    wid = _run(client, auth)
    wait_status(_As(client, auth), wid, {"WAITING_INPUT"})
    approved = client.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "the-ceo"}, headers=auth)
    assert approved.status_code == 202, approved.text
    assert wait_status(_As(client, auth), wid, {"SUCCESS", "ERROR"})["status"] == "SUCCESS"
    other = _run(client, auth)
    wait_status(_As(client, auth), other, {"WAITING_INPUT"})
    gate = client.get(f"/api/runs/{other}/gates", headers=auth).json()[0]["gateKey"]
    event = {
        "workflowId": other,
        "gateKey": gate,
        "topic": f"human:{gate}",
        "payload": {"choice": "yes", "actor": "the-ceo"},
        "dedupeKey": "ci-1",
        "origin": "webhook-ci",
    }
    assert client.post("/api/events/hitl", json=event, headers=auth).status_code == 200
    ledger = _ledger(engine)
    assert [actor for actor, _, _ in ledger] == ["anna", "anna"]
    approval = next(payload for _, origin, payload in ledger if origin == "legacy-approve")
    assert approval["claimedBy"] == "the-ceo"  # the body's name survives only as a note
    with engine.connect() as conn:
        approvers = conn.execute(sa.text("SELECT approved_by FROM app.plan_approvals")).scalars().all()
    assert approvers == ["anna"]
    interactions = client.get(f"/api/runs/{other}/interactions", headers=auth).json()
    assert [i["actor"] for i in interactions] == ["anna"]


def test_the_ledger_refuses_rewrites(client: TestClient, engine: sa.Engine) -> None:
    """Even straight SQL cannot rewrite who decided: UPDATE and DELETE on the reply ledger and on plan approvals
    are refused by Postgres."""
    wid = _run(client, {})
    wait_status(client, wid, {"WAITING_INPUT"})
    assert client.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    for statement in (
        "UPDATE app.human_interactions SET actor = 'mallory'",
        "DELETE FROM app.human_interactions",
        "UPDATE app.plan_approvals SET approved_by = 'mallory'",
        "DELETE FROM app.plan_approvals",
    ):
        with pytest.raises(sa.exc.ProgrammingError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text(statement))
    assert [actor for actor, _, _ in _ledger(engine)] == ["local:po"]
