"""The read a polling client repeats most: ``GET /api/runs/{wid}`` answers from one statement (the run, its
durable facts and its spend together), and ``POST /api/runs`` reads its header the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import loop_statements_during, statements_during
from kodo.api.deps import ApiContext
from kodo.views.runs import read_header


def _statements(engine: sa.Engine, call: Callable[[], Any]) -> list[str]:
    """The first word of every statement ``call`` makes kodo run on ``engine``."""
    return [statement.strip().split(None, 1)[0].upper() for statement, _ in statements_during(engine, call)]


def test_the_run_header_is_one_statement(client: TestClient, engine: sa.Engine) -> None:
    """A header GET is one SELECT (no second read for the spend, no BEGIN/ROLLBACK), made on the event loop's
    connections and none on the engine, and the answer carries the spend it read with the run; read on a
    worker thread (``read_header``: long-polls, a server without event-loop reads) it is one SELECT too."""
    intent = client.post("/api/intents", json={"goal": "one statement", "inputs": {}, "constraints": {}})
    assert intent.status_code == 201, intent.text
    started = client.post("/api/runs", json={"intentId": intent.json()["intentId"], "queuePartitionKey": "p1"})
    assert started.status_code == 201, started.text
    wid = started.json()["workflowID"]
    context: ApiContext = client.app.state.kodo  # type: ignore[attr-defined]
    assert context.loop_reads is not None
    answers: list[dict[str, Any]] = []
    seen: list[str] = []

    def get() -> None:
        seen.extend(
            _statements(engine, lambda: answers.append(client.get(f"/api/runs/{wid}").raise_for_status().json()))
        )

    on_loop = [statement.split(None, 1)[0].upper() for statement, _ in loop_statements_during(context.loop_reads, get)]
    assert seen == [] and on_loop == ["SELECT"], (seen, on_loop)
    spend = answers[0]["spend"]
    assert spend["tokens"] == 0 and spend["reservedTokens"] == 0, spend
    assert answers[0]["workflowID"] == wid
    on_thread = _statements(engine, lambda: read_header(context, wid))
    assert on_thread == ["SELECT"], on_thread


def test_starting_a_run_reads_its_header_in_one_statement(client: TestClient, engine: sa.Engine) -> None:
    """After the insert (which returns the run) and the enqueue, POST /api/runs reads only its header back,
    with one SELECT (it once read the run again, then the header in two)."""
    intent = client.post("/api/intents", json={"goal": "start reads", "inputs": {}, "constraints": {}})
    seen = _statements(
        engine,
        lambda: client.post(
            "/api/runs", json={"intentId": intent.json()["intentId"], "queuePartitionKey": "p2"}
        ).raise_for_status(),
    )
    after_enqueue = seen[seen.index("INSERT", seen.index("INSERT") + 1) :]  # from DBOS's workflow status insert
    assert [s for s in after_enqueue if s == "SELECT"] == ["SELECT"], seen  # the header
