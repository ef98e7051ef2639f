"""Fail closed: every bad input is a 400/404/409/410 with a clear body, never a 422 or 500, and writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import table_counts, wait_status
from kodo.settings import Settings


@pytest.fixture
def intent(client: TestClient) -> str:
    response = client.post("/api/intents", json={"goal": "fail closed", "inputs": {}, "constraints": {}})
    return str(response.json()["intentId"])


def _send(client: TestClient, method: str, path: str, body: Any) -> Any:
    if isinstance(body, str):
        return client.request(method, path, content=body, headers={"content-type": "application/json"})
    if body is None:
        return client.request(method, path)
    return client.request(method, path, json=body)


BAD_INTENTS = [
    ("malformed json", "{bad"),
    ("array body", "[]"),
    ("missing goal", {"inputs": {}, "constraints": {}}),
    ("empty goal", {"goal": "", "inputs": {}, "constraints": {}}),
    ("unknown field", {"goal": "x", "inputs": {}, "constraints": {}, "extra": 1}),
    ("inputs wrong type", {"goal": "x", "inputs": "nope", "constraints": {}}),
    ("goal wrong type", {"goal": 7, "inputs": {}, "constraints": {}}),
    ("connectors wrong type", {"goal": "x", "inputs": {}, "constraints": {}, "connectors": [1]}),
]


@pytest.mark.parametrize("path", ["/api/intents", "/intents"])
@pytest.mark.parametrize(("case", "body"), BAD_INTENTS, ids=[c for c, _ in BAD_INTENTS])
def test_bad_intent_is_400_and_writes_nothing(
    client: TestClient, engine: sa.Engine, path: str, case: str, body: Any
) -> None:
    """Each malformed or schema-breaking intent body is a 400 with an error (and details) and no row."""
    with engine.connect() as conn:
        before = table_counts(conn)
    response = _send(client, "POST", path, body)
    assert response.status_code == 400, (case, response.text)
    assert "error" in response.json() and "details" in response.json()
    with engine.connect() as conn:
        assert table_counts(conn) == before


def _bad_runs(intent: str) -> list[tuple[str, Any, str | None]]:
    run = {"intentId": intent, "queuePartitionKey": "tenant-x"}
    workload = {"concurrency": 1, "steps": 1, "sandboxMinutes": 1}
    policy = "queue_policy_violation"
    return [
        ("malformed json", "{bad", None),
        ("missing intentId", {"queuePartitionKey": "p"}, None),
        ("unknown field", {**run, "extra": True}, None),
        ("steps wrong type", {**run, "workload": {**workload, "steps": "2"}}, None),
        ("workload missing field", {**run, "workload": {"concurrency": 1, "steps": 1}}, None),
        ("priority zero", {**run, "priority": 0}, None),
        ("lane unknown", {**run, "lane": "express"}, None),
        ("queue unknown", {**run, "queueName": "fastQ"}, None),
        ("empty partition key", {**run, "queuePartitionKey": ""}, None),
        ("budget incomplete", {**run, "budget": {"maxFanout": 1}}, None),
        ("autoApprove wrong type", {**run, "autoApprove": "yes"}, None),
        ("parent on sbxQ", {**run, "queueName": "sbxQ", "recipeName": "sandbox-default", "workload": workload}, policy),
        ("no partition key", {"intentId": intent}, policy),
        ("blank partition key", {**run, "queuePartitionKey": "   "}, policy),
        ("blank tenant", {**run, "tenantId": "  "}, policy),
        ("recipe cap", {**run, "recipeName": "sandbox-default", "workload": {**workload, "concurrency": 999}}, policy),
        ("unknown recipe", {**run, "recipeName": "nope"}, policy),
        (
            "budget fan-out",
            {
                **run,
                "workload": {**workload, "steps": 5},
                "budget": {
                    "maxFanout": 2,
                    "maxSBXMinutes": 10,
                    "maxArtifactsMB": 10,
                    "maxRetriesPerStep": 1,
                    "maxWallClockMS": 60000,
                },
            },
            policy,
        ),
    ]


def test_bad_run_starts_are_400_and_write_nothing(client: TestClient, engine: sa.Engine, intent: str) -> None:
    """Each malformed, schema-breaking or policy-breaking start is a 400 (policy ones with a code), zero writes."""
    for case, body, code in _bad_runs(intent):
        with engine.connect() as conn:
            before = table_counts(conn)
        response = _send(client, "POST", "/api/runs", body)
        assert response.status_code == 400, (case, response.text)
        assert response.json().get("code") == code, case
        with engine.connect() as conn:
            assert table_counts(conn) == before, case


def test_legacy_run_bad_body_and_unknown_intent(client: TestClient, engine: sa.Engine, intent: str) -> None:
    """The legacy start answers 400 for a bad body, 404 for an unknown intent (checked first), zero writes."""
    with engine.connect() as conn:
        before = table_counts(conn)
    assert client.post(f"/intents/{intent}/run", json={"unknownField": "x"}).status_code == 400
    cap = {"recipeName": "sandbox-default", "workload": {"concurrency": 999, "steps": 1, "sandboxMinutes": 1}}
    capped = client.post(f"/intents/{intent}/run", json=cap)
    assert capped.status_code == 400 and capped.json()["code"] == "queue_policy_violation"
    missing = client.post(
        "/intents/it_0000000000000000/run", content="{bad", headers={"content-type": "application/json"}
    )
    assert missing.status_code == 404 and missing.json() == {"error": "intent not found"}
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_unknown_things_are_404(client: TestClient, engine: sa.Engine) -> None:
    """Unknown runs, intents and artifacts are 404 with an error body, on every read and write route."""
    with engine.connect() as conn:
        before = table_counts(conn)
    for method, path, body in [
        ("GET", "/api/runs/run_missing", None),
        ("GET", "/runs/run_missing", None),
        ("GET", "/api/runs/run_missing/steps", None),
        ("GET", "/api/artifacts/artifact%3A%2F%2Fmissing", None),
        ("POST", "/api/runs", {"intentId": "it_missing", "queuePartitionKey": "p"}),
        ("POST", "/api/runs/run_missing/approve-plan", {"approvedBy": "x"}),
        ("POST", "/runs/run_missing/approve-plan", {"approvedBy": "x"}),
        ("GET", "/no/such/route", None),
    ]:
        response = _send(client, method, path, body)
        assert response.status_code == 404, (path, response.text)
        assert "error" in response.json()
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_bad_approval_and_proof_queries_are_400(client: TestClient, engine: sa.Engine, intent: str) -> None:
    """approve-plan validates its body; proof routes need ?wf= and a positive sleep; numeric query parameters
    refuse what only looks like a digit; zero writes."""
    client.post("/api/runs", json={"intentId": intent, "queuePartitionKey": "p"})
    wait_status(client, intent, {"WAITING_INPUT"})  # the worker's writes end at the gate: counted from there
    with engine.connect() as conn:
        before = table_counts(conn)
    for method, path, body in [
        ("POST", f"/api/runs/{intent}/approve-plan", {}),
        ("POST", f"/api/runs/{intent}/approve-plan", {"approvedBy": ""}),
        ("POST", f"/api/runs/{intent}/approve-plan", {"approvedBy": "x", "extra": 1}),
        ("POST", f"/api/runs/{intent}/approve-plan", "{bad"),
        ("POST", "/crashdemo", None),
        ("POST", "/crashdemo?wf=", None),
        ("POST", "/crashdemo?wf=a&sleep=-5", None),
        ("POST", "/crashdemo?wf=a&unknown=1", None),
        ("POST", "/crashdemo?wf=a&sleep=\u00b2", None),  # a digit to str.isdigit, not to int()
        ("GET", "/marks", None),
        ("GET", f"/api/runs/{intent}/events?maxSeconds=\u00b2", None),
        ("GET", f"/api/runs/{intent}?until=end&timeoutS=\u00b2", None),
        ("GET", "/api/ops/wf?limit=\u00b2", None),
    ]:
        response = _send(client, method, path, body)
        assert response.status_code == 400, (path, body, response.text)
    with engine.connect() as conn:
        after = table_counts(conn)
    assert after == before


@pytest.fixture
def legacy_off_client(settings: Settings, engine: sa.Engine, client: TestClient) -> Iterator[TestClient]:
    from kodo.api import create_api
    from kodo.api.deps import ApiContext

    context = client.app.state.kodo  # type: ignore[attr-defined]
    off = settings.model_copy(update={"enable_legacy_run_routes": False})
    app = create_api(ApiContext(settings=off, engine=engine, client=context.client, role="monolith"))
    with TestClient(app, base_url="http://127.0.0.1") as http:
        yield http


def test_disabled_legacy_routes_are_410(legacy_off_client: TestClient, intent: str) -> None:
    """With ENABLE_LEGACY_RUN_ROUTES=false the legacy start and approve routes answer 410."""
    assert legacy_off_client.post(f"/intents/{intent}/run", json={}).status_code == 410
    assert legacy_off_client.post(f"/runs/{intent}/approve-plan", json={"approvedBy": "x"}).status_code == 410
