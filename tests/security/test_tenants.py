"""Tenants with tokens: a run's partition must be the token's tenant (``acme`` or ``acme:<suffix>``), its tenantId
is the token's, a foreign tenant's partition is a 403 with nothing written, and all of a tenant's partitions
share one DBOS queue partition (one concurrency cap)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import make_settings, table_counts, wait_status
from kodo.settings import Settings
from kodo.workflows.queues import queue_partition

ACME = {"Authorization": "Bearer approver-acme-token-01"}
SHARED = "shared-ci"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    tokens = [
        {"token": "approver-acme-token-01", "subject": "anna", "tenant": "acme", "role": "approver",
         "partitions": ["acme", "acme:*", SHARED]},
        {"token": "approver-beta-token-01", "subject": "bob", "tenant": "beta", "role": "approver"},
    ]  # fmt: skip
    return make_settings(database_url, tmp_path / "home", KODO_API_TOKENS=json.dumps({"tokens": tokens}))


class _As:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    def get(self, url: str) -> Any:
        return self.client.get(url, headers=ACME)


def _intent(client: TestClient) -> str:
    created = client.post("/api/intents", json={"goal": "g", "inputs": {}, "constraints": {}}, headers=ACME)
    return str(created.json()["intentId"])


@pytest.mark.parametrize("partition", ["beta", "beta:ci", "acmex", SHARED])
def test_a_foreign_tenants_partition_is_403(client: TestClient, engine: sa.Engine, partition: str) -> None:
    """acme's token starting a run in beta's partition (or one that merely looks like acme's, or a shared one
    its token may read) is refused, by every start route, with nothing written."""
    intent = _intent(client)
    with engine.connect() as conn:
        before = table_counts(conn)
    recipe = {"recipeRef": {"id": "compile-default", "v": "v1"}, "formData": {"goal": "g"},
              "opts": {"queuePartitionKey": partition}}  # fmt: skip
    for path, body in (
        ("/api/runs", {"intentId": intent, "queuePartitionKey": partition}),
        (f"/intents/{intent}/run", {"queuePartitionKey": partition}),
        ("/api/run", recipe),
    ):
        response = client.post(path, json=body, headers=ACME)
        assert response.status_code == 403, (path, response.text)
        assert "acme or acme:<suffix>" in response.json()["error"]
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_a_foreign_tenant_id_is_403(client: TestClient, engine: sa.Engine) -> None:
    """A body claiming another tenantId is refused; without one the run's tenant is the token's."""
    intent = _intent(client)
    with engine.connect() as conn:
        before = table_counts(conn)
    claimed = client.post(
        "/api/runs", json={"intentId": intent, "queuePartitionKey": "acme", "tenantId": "beta"}, headers=ACME
    )
    assert claimed.status_code == 403 and "tenantId" in claimed.json()["error"]
    with engine.connect() as conn:
        assert table_counts(conn) == before
    started = client.post("/api/runs", json={"intentId": intent, "queuePartitionKey": "acme:ci"}, headers=ACME)
    assert started.status_code == 201, started.text
    assert started.json()["tenantId"] == "acme"


def test_tenant_partitions_share_one_queue_partition(client: TestClient, engine: sa.Engine) -> None:
    """Runs in acme:1 … acme:3 queue in DBOS partition acme: one concurrency cap, however many suffixes."""
    wids = []
    for n in range(1, 4):
        intent = _intent(client)
        body = {"intentId": intent, "queuePartitionKey": f"acme:{n}", "autoApprove": True}
        assert client.post("/api/runs", json=body, headers=ACME).status_code == 201
        wids.append(intent)
    for wid in wids:
        assert wait_status(_As(client), wid, {"SUCCESS", "ERROR"})["status"] == "SUCCESS"
    with engine.connect() as conn:
        partitions = (
            conn.execute(
                sa.text(
                    "SELECT DISTINCT queue_partition_key FROM dbos.workflow_status "
                    "WHERE queue_partition_key IS NOT NULL"
                )
            )
            .scalars()
            .all()
        )
        keys = conn.execute(sa.text("SELECT queue_partition_key FROM app.runs ORDER BY 1")).scalars().all()
    assert set(partitions) == {"acme"}
    assert keys == ["acme:1", "acme:2", "acme:3"]  # the run keeps its own key for scoping and display


def test_queue_partition_is_the_tenant() -> None:
    """The DBOS partition of a key is the part before its first colon."""
    assert [queue_partition(k) for k in ("acme", "acme:ci", "acme:ci:nightly")] == ["acme", "acme", "acme"]
