"""Which webhook events a gate that times out sends (a 1 s plan-gate TTL), in order, with what data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from helpers import make_settings, wait_status, wait_until
from kodo.settings import Settings
from webhook_receiver import Receiver, receiver

ALL = ["gate.opened", "gate.resolved", "gate.timed_out", "run.succeeded", "run.failed", "run.canceled"]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "home", HITL_PLAN_APPROVAL_TIMEOUT_S="1")


def _start(client: TestClient, goal: str) -> str:
    intent = client.post("/api/intents", json={"goal": goal, "inputs": {}, "constraints": {}}).json()["intentId"]
    started = client.post("/api/runs", json={"intentId": intent, "queuePartitionKey": "events"})
    assert started.status_code == 201, started.text
    return str(intent)


def _types(hook: Receiver, secret: str, count: int) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]]:
        payloads = [payload for event in ALL for _request, payload in hook.of_type(event, secret)]
        return payloads if len(payloads) >= count else []

    found = wait_until(enough, what=f"{count} events")
    return sorted(found, key=lambda payload: str(payload["timestamp"]))


def test_an_unanswered_gate_sends_opened_timed_out_and_run_failed(client: TestClient) -> None:
    """TTL runs out: gate.opened, gate.timed_out, run.failed (GATE_TIMEOUT), in that order, nothing else."""
    with receiver() as hook:
        secret = client.post("/api/webhooks", json={"url": hook.url, "events": ALL}).json()["secret"]
        wid = _start(client, "nobody answers")
        assert wait_status(client, wid, {"ERROR"})["status"] == "ERROR"
        events = _types(hook, secret, 3)
        assert [event["type"] for event in events] == ["gate.opened", "gate.timed_out", "run.failed"]
        assert events[1]["data"]["state"] == "TIMED_OUT" and events[1]["data"]["decision"] == "no"
        assert events[2]["data"]["error"]["code"] == "GATE_TIMEOUT"
        assert events[2]["data"]["status"] == "retries_exceeded" and events[2]["data"]["nextAction"] == "REPAIR"
