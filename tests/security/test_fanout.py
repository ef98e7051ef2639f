"""Unbounded work: one request may not fan out to any number of sandbox tasks. KODO_MAX_FANOUT (64) holds at
admission (400 fanout_cap, nothing written) and at runtime, whatever the run's budget."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import table_counts, wait_status
from kodo.models import Intent
from kodo.store import intents


def test_a_20000_section_report_is_400(client: TestClient, engine: sa.Engine) -> None:
    """The json-report recipe with 20,000 formData.sections (one task each) is refused before anything is written."""
    with engine.connect() as conn:
        before = table_counts(conn)
    sections = [f"s{n}" for n in range(20_000)]
    body = {
        "recipeRef": {"id": "json-report", "v": "v1"},
        "formData": {"topic": "everything", "sections": sections},
        "opts": {"queuePartitionKey": "p1", "autoApprove": True},
    }
    response = client.post("/api/run", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "fanout_cap"
    assert "asks for 20000 tasks > KODO_MAX_FANOUT 64" in response.json()["error"]
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_long_tests_list_and_many_steps_are_400(client: TestClient, engine: sa.Engine) -> None:
    """An intent with 65 constraints.tests, or a start with workload.steps 65 and no budget, is refused."""
    with engine.connect() as conn:
        before = table_counts(conn)
    tests = [f"t{n}" for n in range(65)]
    intent = client.post("/api/intents", json={"goal": "g", "inputs": {}, "constraints": {"tests": tests}})
    assert intent.status_code == 400 and intent.json()["code"] == "fanout_cap"
    with engine.connect() as conn:
        assert table_counts(conn) == before
    ok = client.post("/api/intents", json={"goal": "g", "inputs": {}, "constraints": {}}).json()["intentId"]
    with engine.connect() as conn:
        before = table_counts(conn)
    workload = {"concurrency": 1, "steps": 65, "sandboxMinutes": 1}
    started = client.post("/api/runs", json={"intentId": ok, "queuePartitionKey": "p1", "workload": workload})
    assert started.status_code == 400 and started.json()["code"] == "fanout_cap", started.text
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_runtime_cap_holds_without_a_budget(client: TestClient, engine: sa.Engine) -> None:
    """An intent that reached the database without the admission check (65 tests) fails FANOUT_CAP at runtime,
    before any sandbox task runs."""
    with engine.begin() as conn:
        intents.create(
            conn,
            Intent(id="it_wide000000000001", goal="g", inputs={}, constraints={"tests": [f"t{n}" for n in range(65)]}),
        )
    started = client.post(
        "/api/runs", json={"intentId": "it_wide000000000001", "queuePartitionKey": "p1", "autoApprove": True}
    )
    assert started.status_code == 201, started.text
    header = wait_status(client, "it_wide000000000001", {"SUCCESS", "ERROR"})
    assert header["status"] == "ERROR" and header["error"]["code"] == "FANOUT_CAP", header
    with engine.connect() as conn:
        assert table_counts(conn)["app.sbx_runs"] == 0
