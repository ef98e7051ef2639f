"""Unbounded reads: step and artifact lists are paginated and never carry an artifact's content (which is fetched
by its URI), so a run with large or many artifacts cannot make a list read expensive."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import table_counts, wait_status


def _finished_run(client: TestClient, tests: int) -> str:
    constraints = {"tests": [f"t{n}" for n in range(tests)]}
    intent = client.post("/api/intents", json={"goal": "many", "inputs": {}, "constraints": constraints}).json()
    wid = str(intent["intentId"])
    client.post("/api/runs", json={"intentId": wid, "queuePartitionKey": "p1", "autoApprove": True})
    assert wait_status(client, wid, {"SUCCESS", "ERROR"})["status"] == "SUCCESS"
    return wid


def test_step_list_is_paginated_and_has_no_content(client: TestClient, engine: sa.Engine) -> None:
    """?limit pages through the steps with a Link to the next page; refs carry size and hash, never inline."""
    wid = _finished_run(client, 3)
    everything = client.get(f"/api/runs/{wid}/steps?limit=500")
    assert everything.status_code == 200 and "link" not in everything.headers
    rows = everything.json()
    assert len(rows) >= 4
    first = client.get(f"/api/runs/{wid}/steps?limit=2")
    assert [r["stepID"] for r in first.json()] == [r["stepID"] for r in rows[:2]]
    assert first.headers["link"] == f'</api/runs/{wid}/steps?limit=2&offset=2>; rel="next"'
    second = client.get(f"/api/runs/{wid}/steps?limit=2&offset=2").json()
    assert [(r["stepID"], r["attempt"]) for r in second] == [(r["stepID"], r["attempt"]) for r in rows[2:4]]
    refs = [ref for row in rows for ref in row["artifactRefs"]]
    assert refs and all("inline" not in ref and ref["size"] > 0 for ref in refs)
    fetched = client.get(f"/api/artifacts/{refs[0]['id']}")
    assert fetched.status_code == 200  # content comes by URI
    legacy = client.get(f"/runs/{wid}").json()
    assert legacy["artifacts"] and all("inline" not in a for a in legacy["artifacts"])


def test_bad_page_parameters_are_400(client: TestClient, engine: sa.Engine) -> None:
    """limit 0, 501, a repeated or non-numeric value, or an unknown parameter is a 400 and writes nothing."""
    wid = _finished_run(client, 1)
    with engine.connect() as conn:
        before = table_counts(conn)
    for query in ("limit=0", "limit=501", "limit=1&limit=2", "offset=-1", "limit=x", "page=2"):
        response = client.get(f"/api/runs/{wid}/steps?{query}")
        assert response.status_code == 400, (query, response.text)
    with engine.connect() as conn:
        assert table_counts(conn) == before
