"""Unbounded reads: slow SSE readers and long-polls cannot pile up in a process. Past KODO_MAX_STREAMS a new one
is a 503 with Retry-After, at once; the slot comes back when the stream ends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import table_counts, wait_status, wait_until
from kodo.api.deps import ApiContext
from kodo.main import create_app, dbos_client
from kodo.settings import Settings


@pytest.fixture
def capped(settings: Settings, engine: sa.Engine, client: TestClient) -> Iterator[TestClient]:
    """An API process with KODO_MAX_STREAMS=1 (the worker is the client fixture's)."""
    dbos = dbos_client(settings, engine)
    one = settings.model_copy(update={"max_streams": 1})
    app = create_app(ApiContext(settings=one, engine=engine, client=dbos, role="api"))
    with TestClient(app, base_url="http://127.0.0.1") as http:
        yield http
    dbos.destroy()


def test_stream_past_the_cap_is_503_with_retry_after(client: TestClient, capped: TestClient, engine: sa.Engine) -> None:
    """While one long-poll waits, an event stream (and another long-poll) is refused 503 + Retry-After."""
    intent = client.post("/api/intents", json={"goal": "hold", "inputs": {}, "constraints": {}}).json()["intentId"]
    client.post("/api/runs", json={"intentId": intent, "queuePartitionKey": "p1"})
    wait_status(client, intent, {"WAITING_INPUT"})  # parked at its plan gate: a long-poll for SUCCESS waits
    held: dict[str, Any] = {}
    poll = threading.Thread(target=lambda: held.update(r=capped.get(f"/api/runs/{intent}?until=end&timeoutS=4")))
    poll.start()
    try:
        with engine.connect() as conn:
            before = table_counts(conn)
        refused = wait_until(
            lambda: (r := capped.get(f"/api/runs/{intent}/events?maxSeconds=1")).status_code == 503 and r,
            what="a refused stream",
        )
        assert refused.headers["retry-after"] == "2"
        assert "KODO_MAX_STREAMS" in refused.json()["error"]
        assert capped.get(f"/api/runs/{intent}?until=end&timeoutS=1").status_code == 503
        assert capped.get(f"/api/runs/{intent}").status_code == 200  # a plain read is not a stream
        with engine.connect() as conn:
            assert table_counts(conn) == before
    finally:
        poll.join()
    assert held["r"].status_code == 200
    assert capped.get(f"/api/runs/{intent}?until=end&timeoutS=1").status_code == 200  # the slot came back
