"""A spend budget through the real ``opencode serve`` on kodo's fake model: the run crosses maxCostUsd at its
second agent call, parks at a budget gate, and finishes once a higher limit is approved."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import make_settings, wait_status, wait_until
from kodo.adapters.agent.opencode_server import OpenCodeServer
from kodo.settings import Settings
from live_servers import PASSWORD, fake_model, opencode_server

__all__ = ["fake_model", "opencode_server"]
BUDGET = {"maxFanout": 10, "maxSBXMinutes": 5, "maxArtifactsMB": 100, "maxRetriesPerStep": 1, "maxWallClockMS": 600_000}


@pytest.fixture
def settings(database_url: str, tmp_path: Path, opencode_server: OpenCodeServer) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "home",
        OC_MODE="live",
        OC_PROVIDER="opencode",
        OC_STRICT_MODE="true",
        OC_BASE_URL=opencode_server.base_url,
        OPENCODE_SERVER_PASSWORD=PASSWORD,
        OC_MODEL="kodo-fake",
        OC_TIMEOUT_MS="60000",
    )


def test_budget_gate_through_opencode(client: TestClient, engine: sa.Engine) -> None:
    """OpenCode's tokens priced by kodo: park at DecideST, approve a top-up; the ledger equals the header."""
    goal = {"goal": "opencode spend kodo-fake: usage=100000x20000", "inputs": {}, "constraints": {}}
    wid = client.post("/api/intents", json=goal).json()["intentId"]
    body = {"intentId": wid, "queuePartitionKey": "oc", "autoApprove": True, "budget": {**BUDGET, "maxCostUsd": 0.15}}
    assert client.post("/api/runs", json=body).status_code == 201

    def pending() -> dict[str, object] | None:
        found = [g for g in client.get(f"/api/runs/{wid}/gates").json() if g["purpose"] == "budget"]
        return next((g for g in found if g["state"] == "PENDING"), None)

    gate = wait_until(pending, timeout=120, what="budget gate")
    assert gate["stepID"] == "DecideST" and gate["prompt"]["details"]["spend"]["costUsd"] >= 0.14
    answer = {"payload": {"choice": "yes", "maxCostUsd": 5}, "dedupeKey": "up", "origin": "manual"}
    wait_until(lambda: client.get(f"/api/runs/{wid}").json()["dbosStatus"] == "DELAYED", what="parked")
    assert client.post(f"/api/runs/{wid}/gates/{gate['gateKey']}/reply", json=answer).status_code == 200
    done = wait_status(client, wid, {"SUCCESS", "ERROR", "CANCELLED"}, timeout=120)
    assert done["status"] == "SUCCESS", done
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT model, cost_usd FROM app.opencode_calls ORDER BY created_at")).all()
    assert [row.model for row in rows] == ["kodo-fake", "kodo-fake"]
    total = sum((Decimal(row.cost_usd) for row in rows), Decimal(0))
    assert total >= Decimal("0.28") and done["spend"]["costUsd"] == float(total)
