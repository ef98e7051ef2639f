"""Existence never leaks across tenants: a foreign run and a missing one get the same answer, whatever the
query (a malformed one included), because the tenant check runs before the route validates anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import make_settings, table_counts
from kodo.settings import Settings

ACME = {"Authorization": "Bearer approver-acme-token-01"}
BETA = {"Authorization": "Bearer operator-beta-token-01"}  # an approver too: operator includes it


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    tokens = [
        {"token": "approver-acme-token-01", "subject": "anna", "tenant": "acme", "role": "approver"},
        {"token": "operator-beta-token-01", "subject": "bob", "tenant": "beta", "role": "operator"},
    ]
    return make_settings(database_url, tmp_path / "home", KODO_API_TOKENS=json.dumps({"tokens": tokens}))


@pytest.fixture
def foreign(client: TestClient) -> str:
    """A run of tenant acme, which beta probes."""
    intent = client.post("/api/intents", json={"goal": "g", "inputs": {}, "constraints": {}}, headers=ACME)
    wid = str(intent.json()["intentId"])
    assert (
        client.post("/api/runs", json={"intentId": wid, "queuePartitionKey": "acme"}, headers=ACME).status_code == 201
    )
    return wid


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/runs/{wid}?until=bogus", None),
        ("GET", "/api/runs/{wid}?timeoutS=x", None),
        ("GET", "/api/runs/{wid}/events?maxSeconds=-1", None),
        ("GET", "/api/runs/{wid}/gates/BAD KEY?timeoutS=99", None),
        ("GET", "/api/runs/{wid}/interactions?limit=0", None),
        ("GET", "/api/ops/wf/{wid}?bogus=1", None),
        ("POST", "/api/ops/wf/{wid}/cancel", {"actor": "", "reason": ""}),
        ("POST", "/api/runs/{wid}/approve-plan", {"unknown": 1}),
        ("GET", "/runs/{wid}", None),
    ],
)
def test_foreign_and_missing_runs_answer_alike(
    client: TestClient, engine: sa.Engine, foreign: str, method: str, path: str, body: object
) -> None:
    """beta probing acme's run with a malformed request gets exactly what it gets for a run that does not exist."""
    with engine.connect() as conn:
        before = table_counts(conn)
    answers = []
    for wid in (foreign, "run_does_not_exist"):
        response = client.request(method, path.format(wid=wid), json=body, headers=BETA)
        text = response.text.replace(wid, "<wid>")
        answers.append((response.status_code, text))
    assert answers[0] == answers[1], answers
    assert answers[0][0] in {200, 404}
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_an_event_naming_a_foreign_run_answers_like_a_missing_one(
    client: TestClient, engine: sa.Engine, foreign: str
) -> None:
    """POST /api/events/hitl with a malformed event for acme's run answers beta as for a run that does not exist."""
    with engine.connect() as conn:
        before = table_counts(conn)
    answers = []
    for wid in (foreign, "run_does_not_exist"):
        event = {
            "workflowId": wid,
            "gateKey": "BAD KEY",
            "topic": "nope",
            "payload": {},
            "dedupeKey": "",
            "origin": "x",
        }
        response = client.post("/api/events/hitl", json=event, headers=BETA)
        answers.append((response.status_code, response.text.replace(wid, "<wid>")))
    assert answers[0] == answers[1] and answers[0][0] == 404, answers
    with engine.connect() as conn:
        assert table_counts(conn) == before
