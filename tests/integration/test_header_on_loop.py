"""The run header read on the API's event loop (``AsyncConnections``): the same answer as the read on a worker
thread for every kind of run, no worker thread for a plain run, a bounded pool that survives a server that closed
its connections, and a clear 404 / 503 as the thread path gives."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import closed_port, statements_during
from kodo.api.deps import ApiContext
from kodo.errors import NotFound
from kodo.settings import Settings
from kodo.store import durable_status
from kodo.store.async_connections import AsyncConnections
from kodo.views.runs import header_reads, plain_reads, read_header, read_header_on_loop


def _start(client: TestClient, goal: str, **extra: Any) -> str:
    intent = client.post("/api/intents", json={"goal": goal, "inputs": {}, "constraints": {}})
    assert intent.status_code == 201, intent.text
    body = {"intentId": intent.json()["intentId"], "queuePartitionKey": "loop", **extra}
    started = client.post("/api/runs", json=body)
    assert started.status_code == 201, started.text
    return str(started.json()["workflowID"])


def _context(client: TestClient) -> ApiContext:
    context: ApiContext = client.app.state.kodo  # type: ignore[attr-defined]
    return context


def test_the_loop_read_answers_what_the_thread_read_answers(client: TestClient, engine: sa.Engine) -> None:
    """For a plain run, a run with a budget and a tenant's run, by workflow id and by run id, the event-loop
    header is the worker-thread header, field for field (the last two read their budget and tenant spend on a
    thread, as before)."""
    plain = _start(client, "plain")
    budget = {"maxFanout": 3, "maxSBXMinutes": 5, "maxArtifactsMB": 100, "maxRetriesPerStep": 1, "maxCostUsd": 0.5}
    budgeted = _start(client, "budgeted", budget={**budget, "maxWallClockMS": 60_000})
    tenants = _start(client, "tenant's")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE app.runs SET tenant_id = 'acme' WHERE workflow_id = :w"), {"w": tenants})
    context = _context(client)
    pool = AsyncConnections(str(context.settings.database_url), size=2, application_name="kodo-test-compare")
    try:
        for wid in (plain, budgeted, tenants):
            thread = read_header(context, wid)
            for key in (wid, thread["runId"]):
                loop = asyncio.run(read_header_on_loop(context, pool, key))
                assert loop == read_header(context, key), key
        assert thread["tenantId"] == "acme" and thread["spend"]["tenantTodayUsd"] == 0.0
        limited = read_header(context, budgeted)["spend"]
        assert limited["maxCostUsd"] == 0.5 and limited["remainingUsd"] == 0.5, limited
        with pytest.raises(NotFound):
            asyncio.run(read_header_on_loop(context, pool, "no-such-run"))
    finally:
        pool.close()


def test_a_plain_runs_header_takes_no_worker_thread(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """``GET /api/runs/{wid}`` of a run without budget, recipe or tenant is answered with every worker-thread
    hop of the route refused; a missing run is still a 404."""
    wid = _start(client, "no thread")

    def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the header went to a worker thread")

    monkeypatch.setattr("kodo.api.runs.run_in_threadpool", refused)
    monkeypatch.setattr("kodo.views.runs.to_thread.run_sync", refused)
    answer = client.get(f"/api/runs/{wid}")
    assert answer.status_code == 200 and answer.json()["workflowID"] == wid, answer.text
    missing = client.get("/api/runs/no-such-run")
    assert missing.status_code == 404 and missing.json()["error"] == "run not found", missing.text


def _backends(database_url: str, application_name: str) -> list[int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [application_name])
        return [int(row[0]) for row in rows]


def test_the_pool_is_bounded_and_replaces_connections_the_server_closed(settings: Settings) -> None:
    """Eight reads at once over a pool of two open two connections; after the server ends both (a restart, an
    outage), the next read answers on a new one instead of failing on a dead one."""
    assert settings.database_url is not None
    pool = AsyncConnections(settings.database_url, size=2, application_name="kodo-test-bounded")

    async def reads(count: int) -> list[Any]:
        return await asyncio.gather(*(pool.fetch_one("SELECT pg_sleep(0.05), 1 AS one", {}) for _ in range(count)))

    async def scenario() -> None:
        answers = await reads(8)
        assert [row.one for row in answers] == [1] * 8
        assert pool.opened == 2, pool.opened
        backends = _backends(settings.database_url or "", "kodo-test-bounded")
        assert len(backends) == 2, backends
        with psycopg.connect(settings.database_url or "", autocommit=True) as admin:
            for pid in backends:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        again = await pool.fetch_one("SELECT 2 AS two", {})
        assert again is not None and again.two == 2
        assert pool.opened == 3, pool.opened

    try:
        asyncio.run(scenario())
    finally:
        pool.close()
    assert _backends(settings.database_url, "kodo-test-bounded") == []


def test_a_header_read_on_the_loop_meets_an_outage_with_a_503(client: TestClient, settings: Settings) -> None:
    """With the database unreachable, the event-loop header answers 503 with ``Retry-After`` (as the worker-thread
    read does), and answers 200 again once it is back."""
    wid = _start(client, "outage")
    context = _context(client)
    assert context.loop_reads is not None
    working = context.loop_reads.url
    context.loop_reads.close()
    context.loop_reads.url = f"postgresql://kodo@127.0.0.1:{closed_port()}/kodo"  # nothing listens: refused
    try:
        down = client.get(f"/api/runs/{wid}")
        assert down.status_code == 503 and down.headers["Retry-After"], down.text
    finally:
        context.loop_reads.url = working
    back = client.get(f"/api/runs/{wid}")
    assert back.status_code == 200, back.text


def test_the_shortcut_answers_only_for_runs_whose_header_reads_nothing_more(
    client: TestClient, engine: sa.Engine
) -> None:
    """``plain_reads`` (the event loop's shortcut) answers only for a run whose ``header_reads`` makes no
    statement, and answers what ``header_reads`` does: a read added to the header for some runs without
    teaching ``plain_reads`` fails here."""
    wid = _start(client, "plain enough")
    with engine.connect() as conn:
        found = durable_status.run_with_durability(conn, wid)
        assert found is not None
        run, facts = found
        shortcut = plain_reads(run, facts)
        made = statements_during(engine, lambda: header_reads(conn, run, facts))
        assert shortcut is not None and made == [] and shortcut == header_reads(conn, run, facts), made
        for change in ({"budget": {"maxFanout": 1}}, {"recipe_id": "r"}, {"tenant_id": "t"}):
            assert plain_reads(replace(run, **change), facts) is None, change
