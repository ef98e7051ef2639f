"""Webhooks with bearer tokens: admin role for subscriptions, and each tenant hears and sees only its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import make_settings, table_counts, wait_until
from kodo.settings import Settings
from webhook_receiver import receiver

TOKENS = {
    "acme": ("admin-acme-token-00001", "ada", "acme", "admin"),
    "acme-operator": ("operator-acme-token-01", "otto", "acme", "operator"),
    "beta": ("admin-beta-token-00001", "bea", "beta", "admin"),
    "all-viewer": ("viewer-all-token-00001", "vic", "*", "viewer"),
    "all-operator": ("operator-all-token-001", "opal", "*", "operator"),
}


def _auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who][0]}"}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    spec = {"tokens": [{"token": t, "subject": s, "tenant": n, "role": r} for t, s, n, r in TOKENS.values()]}
    return make_settings(database_url, tmp_path / "home", KODO_API_TOKENS=json.dumps(spec))


def _subscribe(client: TestClient, who: str, url: str) -> dict[str, Any]:
    response = client.post("/api/webhooks", json={"url": url, "events": ["gate.opened"]}, headers=_auth(who))
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_subscriptions_need_admin_and_stay_within_their_tenant(client: TestClient, engine: sa.Engine) -> None:
    """An operator cannot subscribe (403, nothing written); acme's hook hears acme's run, beta's hears nothing."""
    with engine.connect() as conn:
        before = table_counts(conn)
    refused = client.post(
        "/api/webhooks", json={"url": "http://127.0.0.1:1/h", "events": ["gate.opened"]}, headers=_auth("acme-operator")
    )
    assert refused.status_code == 403
    assert (
        client.post("/api/webhooks", json={"url": "http://127.0.0.1:1/h", "events": ["gate.opened"]}).status_code == 401
    )
    with engine.connect() as conn:
        assert table_counts(conn) == before
    with receiver() as acme_hook, receiver() as beta_hook:
        acme = _subscribe(client, "acme", acme_hook.url)
        beta = _subscribe(client, "beta", beta_hook.url)
        assert acme["tenant"] == "acme" and beta["tenant"] == "beta"
        intent = client.post(
            "/api/intents", json={"goal": "tenant hook", "inputs": {}, "constraints": {}}, headers=_auth("acme")
        ).json()["intentId"]
        started = client.post(
            "/api/runs", json={"intentId": intent, "queuePartitionKey": "acme"}, headers=_auth("acme")
        )
        assert started.status_code == 201, started.text
        got = wait_until(lambda: acme_hook.of_type("gate.opened", acme["secret"]), what="acme's gate.opened")
        assert got[0][1]["data"]["workflowId"] == intent
        with engine.connect() as conn:
            deliveries = conn.execute(sa.text("SELECT subscription_id FROM app.webhook_deliveries")).scalars().all()
        assert deliveries == [acme["id"]] and beta_hook.requests == []
        assert [s["id"] for s in client.get("/api/webhooks", headers=_auth("beta")).json()] == [beta["id"]]
        assert client.delete(f"/api/webhooks/{acme['id']}", headers=_auth("beta")).status_code == 404
        assert client.get("/api/webhooks/deliveries", headers=_auth("beta")).json() == []
        mine = client.get("/api/webhooks/deliveries", headers=_auth("acme-operator")).json()
        assert [d["subscriptionId"] for d in mine] == [acme["id"]]
        assert client.get("/api/webhooks", headers=_auth("acme-operator")).status_code == 403


def test_the_ops_console_lists_dead_deliveries_to_operators_only(client: TestClient) -> None:
    """/ops shows the dead deliveries (URLs, errors, a Redeliver button) to an operator, not to a viewer."""
    operator = client.get("/ops", headers=_auth("all-operator"))
    viewer = client.get("/ops", headers=_auth("all-viewer"))
    assert operator.status_code == 200 and viewer.status_code == 200
    assert "Dead webhook deliveries" in operator.text and "Dead webhook deliveries" not in viewer.text
    assert "<title>Ops console · kodo</title>" in operator.text  # the title holds the title only
