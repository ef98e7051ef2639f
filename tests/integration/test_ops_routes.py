"""Every ops route's success and error classes; errors (and GETs) write nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import make_settings, table_counts, wait_status, wait_until
from kodo.settings import Settings
from ops_helpers import dbos_status, marks, new_run

ACTION = {"actor": "qa", "reason": "probe"}


@pytest.fixture
def settings(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """A fast heartbeat, so the in-process worker shows up in the executors view at once."""
    extra: dict[str, str] = getattr(request, "param", {})
    return make_settings(database_url, tmp_path / "home", **{"KODO_HEARTBEAT_INTERVAL_SEC": "0.2", **extra})


def snapshot(engine: sa.Engine) -> dict[str, Any]:
    """Every app table count plus every DBOS status: what an error must leave untouched."""
    with engine.connect() as conn:
        counts: dict[str, Any] = table_counts(conn)
        counts["statuses"] = sorted(
            conn.execute(sa.text("SELECT workflow_uuid, status FROM dbos.workflow_status")).all()
        )
        counts["ops"] = conn.execute(sa.text("SELECT count(*) FROM app.artifacts WHERE step_id='OPS'")).scalar_one()
    return counts


def test_exactly_six_workflow_routes(client: TestClient) -> None:
    """The app serves exactly six /api/ops/wf* routes: list, get, steps, cancel, resume, fork."""
    paths = client.get("/openapi.json").json()["paths"]
    found = sorted(
        (method.upper(), path) for path, item in paths.items() if path.startswith("/api/ops/wf") for method in item
    )
    assert found == [
        ("GET", "/api/ops/wf"),
        ("GET", "/api/ops/wf/{wid}"),
        ("GET", "/api/ops/wf/{wid}/steps"),
        ("POST", "/api/ops/wf/{wid}/cancel"),
        ("POST", "/api/ops/wf/{wid}/fork"),
        ("POST", "/api/ops/wf/{wid}/resume"),
    ]


def test_list_get_steps_read_without_writing(client: TestClient, engine: sa.Engine) -> None:
    """List (filters, newest first), get (summary + run + audit) and steps; strict queries → 400; no writes."""
    wid = new_run(client, partition="p-list")
    wait_status(client, wid, {"WAITING_INPUT"})
    wait_until(lambda: dbos_status(engine, wid) == "SUCCESS", what="RunIntent parked and done")
    assert client.post("/slowstep?wf=slow-l&sleep=1").status_code == 202
    wait_until(lambda: dbos_status(engine, "slow-l") == "SUCCESS", what="slow-l")
    before = snapshot(engine)
    listed = client.get("/api/ops/wf?limit=200").json()
    assert [w["createdAt"] for w in listed] == sorted((w["createdAt"] for w in listed), reverse=True)
    names = {w["workflowName"] for w in listed}
    assert {"RunIntent", "ResumeRun", "SlowStep"} <= names
    assert [w["workflowID"] for w in client.get("/api/ops/wf?name=SlowStep").json()] == ["slow-l"]
    delayed = client.get("/api/ops/wf?status=DELAYED&partition=p-list").json()
    assert [w["runId"] for w in delayed] and delayed[0]["workflowName"] == "ResumeRun"
    assert client.get("/api/ops/wf?queue=controlQ&limit=1").json()[0]["queueName"] in {"controlQ", None}
    assert len(client.get("/api/ops/wf?limit=1").json()) == 1
    for bad in ("unknown=1", "limit=0", "limit=201", "limit=abc", "status=RUNNING", "hideInternal=maybe", "name="):
        response = client.get(f"/api/ops/wf?{bad}")
        assert response.status_code == 400, bad
        assert "error" in response.json()
    got = client.get(f"/api/ops/wf/{wid}").json()
    assert got["workflowID"] == wid and got["run"]["status"] == "waiting_input" and got["audit"] == []
    assert client.get(f"/api/ops/wf/{got['run']['runId']}").json()["workflowID"] == wid  # dual lookup
    steps = client.get(f"/api/ops/wf/{wid}/steps").json()
    assert [s["functionId"] for s in steps] == list(range(1, len(steps) + 1))
    assert all(s["status"] == "SUCCESS" for s in steps)
    missing = client.get("/api/ops/wf/nope-1")
    assert missing.status_code == 404 and missing.json() == {"error": "workflow not found: nope-1"}
    assert client.get("/api/ops/wf/nope-1/steps").status_code == 404
    assert client.get(f"/api/ops/wf/{wid}?x=1").status_code == 400
    assert snapshot(engine) == before


@pytest.mark.parametrize("route", ["cancel", "resume", "fork"])
def test_mutations_fail_closed_with_zero_writes(client: TestClient, engine: sa.Engine, route: str) -> None:
    """Missing/blank actor or reason, unknown fields, bad JSON or stepN → 400; unknown id → 404; nothing written."""
    assert client.post("/slowstep?wf=slow-z&sleep=8000").status_code == 202
    wait_until(lambda: marks(client, "slow-z")["s1"] == 1, what="slow-z in its sleep")
    before = snapshot(engine)
    fork = {"stepN": 1} if route == "fork" else {}
    bodies: list[Any] = [
        {**fork},
        {**fork, "actor": "qa"},
        {**fork, "reason": "r"},
        {**fork, "actor": "", "reason": "r"},
        {**fork, "actor": "   ", "reason": "r"},
        {**fork, "actor": "qa", "reason": ""},
        {**fork, **ACTION, "extra": True},
        {**fork, "actor": 1, "reason": "r"},
        [ACTION],
    ]
    if route == "fork":
        bodies += [ACTION, {**ACTION, "stepN": 0}, {**ACTION, "stepN": "1"}, {**ACTION, "stepN": True}]
    for body in bodies:
        response = client.post(f"/api/ops/wf/slow-z/{route}", json=body)
        assert response.status_code == 400, (body, response.text)
    bad_json = client.post(f"/api/ops/wf/slow-z/{route}", content=b"{bad", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"] == "invalid json"
    unknown = client.post(f"/api/ops/wf/nope-2/{route}", json={**fork, **ACTION})
    assert unknown.status_code == 404 and unknown.json()["error"] == "workflow not found: nope-2"
    if route == "resume":  # PENDING is not resumable
        assert client.post("/api/ops/wf/slow-z/resume", json=ACTION).status_code == 409
    if route == "fork":  # no step beyond the last
        assert client.post("/api/ops/wf/slow-z/fork", json={**ACTION, "stepN": 99999}).status_code == 409
    assert snapshot(engine) == before


def test_queue_views_executors_and_their_errors(client: TestClient, engine: sa.Engine) -> None:
    """Queue depth, fairness, priority, throughput and executors answer; bad queries are 400s with no writes."""
    for n in range(3):
        new_run(client, f"view {n}", partition=f"p{n % 2}")
    wids = [w["workflowID"] for w in client.get("/api/ops/wf?name=RunIntent").json()]
    for wid in wids:
        wait_status(client, wid, {"WAITING_INPUT"})
        wait_until(lambda wid=wid: dbos_status(engine, wid) == "SUCCESS", what="RunIntent parked and done")
    before = snapshot(engine)
    depth = client.get("/api/ops/queue-depth").json()
    delayed = [row for row in depth if row["queueName"] == "intentQ" and row["status"] == "DELAYED"]
    assert (
        delayed and delayed[0]["workflowCount"] == 3 and delayed[0]["oldestCreatedAt"] <= delayed[0]["newestCreatedAt"]
    )
    assert client.get("/api/ops/queue-depth?queueName=sbxQ&status=ENQUEUED").json() == []
    fairness = client.get("/api/ops/queue-fairness?queueName=intentQ").json()
    assert sorted((r["partitionKey"], r["workflowCount"]) for r in fairness) == [("p0", 2), ("p1", 1)]
    priority = client.get("/api/ops/queue-priority").json()
    assert any(r["queueName"] == "intentQ" and r["priority"] == 1 for r in priority)
    throughput = client.get("/api/ops/throughput?windowSec=600").json()
    assert throughput["completed"] >= 3 and throughput["runs"] == [{"status": "waiting_input", "count": 3}]
    assert {c["name"] for c in throughput["completions"]} >= {"RunIntent"}
    assert throughput["fairness"] and throughput["priority"]
    view = wait_until(
        lambda: (v := client.get("/api/ops/executors").json())["executors"] and v["executors"][0]["leader"] and v,
        what="leader",
    )
    me = view["executors"][0]
    assert me["alive"] is True and me["appVersion"] == "v1" and me["heartbeatAgeMs"] < 5000
    assert view["liveVersions"] == {"v1": [me["executorId"]]} and view["stranded"] == []
    for bad in (
        "/api/ops/queue-depth?status=SUCCESS",
        "/api/ops/queue-depth?limit=0",
        "/api/ops/queue-depth?queue=x",
        "/api/ops/throughput?windowSec=0",
        "/api/ops/throughput?x=1",
        "/api/ops/executors?x=1",
        "/api/ops/queue-priority?windowSec=abc",
    ):
        assert client.get(bad).status_code == 400, bad
    after = snapshot(engine)
    assert after == before


def test_durable_sleep_route(client: TestClient, engine: sa.Engine) -> None:
    """POST /api/ops/sleep: 400s write nothing; 202 sleeps durably (before/after artifacts), creates no run."""
    run_wid = new_run(client, partition="p-sleep")
    wait_status(client, run_wid, {"WAITING_INPUT"})
    wait_until(lambda: dbos_status(engine, run_wid) == "SUCCESS", what="RunIntent parked and done")
    before = snapshot(engine)
    for bad in ("", "?wf=", "?wf=s1&sleep=0", "?wf=s1&sleep=abc", "?wf=s1&sleep=-5", "?wf=s1&x=1"):
        response = client.post(f"/api/ops/sleep{bad}")
        assert response.status_code == 400, bad
    assert snapshot(engine) == before
    assert client.post(f"/api/ops/sleep?wf={run_wid}&sleep=10").status_code == 409
    accepted = client.post("/api/ops/sleep?wf=sleep-1&sleep=800")
    assert accepted.status_code == 202
    assert accepted.json() == {"accepted": True, "workflowID": "sleep-1", "sleepMs": 800, "isReplay": False}
    wait_until(lambda: dbos_status(engine, "sleep-1") == "SUCCESS", what="sleep done")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT step_id, created_at FROM app.artifacts WHERE run_id = 'sleep-1' ORDER BY created_at")
        ).all()
        runs = conn.execute(sa.text("SELECT count(*) FROM app.runs WHERE id = 'sleep-1' OR workflow_id = 'sleep-1'"))
        assert runs.scalar_one() == 0
    assert [r.step_id for r in rows] == ["sleep-before-sleep", "sleep-after-sleep"]
    assert (rows[1].created_at - rows[0].created_at).total_seconds() >= 0.8
    replay = client.post("/api/ops/sleep?wf=sleep-1&sleep=800")
    assert replay.status_code == 202 and replay.json()["isReplay"] is True
    assert client.post("/slowstep?wf=slow-s&sleep=1").status_code == 202
    assert client.post("/api/ops/sleep?wf=slow-s").status_code == 409
    hidden = client.get("/api/ops/wf?hideInternal=true&limit=200").json()
    assert "sleep-1" not in {w["workflowID"] for w in hidden}
    assert "sleep-1" in {w["workflowID"] for w in client.get("/api/ops/wf?limit=200").json()}


@pytest.mark.parametrize("settings", [{"KODO_SCHEDULED_TICK_CRON": "* * * * * *"}], indirect=True)
def test_scheduled_ticks_are_recorded_and_hidden_on_request(
    client: TestClient, engine: sa.Engine, settings: Settings
) -> None:
    """ScheduledTick (every second here) writes one artifact per tick; hideInternal drops it; the schedule is
    created once, replaced on a new cron, removed by `off`."""
    from dbos import DBOS

    from kodo.workflows.timers import TICK_SCHEDULE, ensure_schedule

    def ticks() -> list[str]:
        with engine.connect() as conn:
            query = "SELECT run_id FROM app.artifacts WHERE step_id = 'ScheduledTick' ORDER BY run_id"
            return list(conn.execute(sa.text(query)).scalars())

    found = wait_until(lambda: len(ticks()) >= 2 and ticks(), timeout=20, what="two ticks")
    assert all(anchor.startswith(f"sched-{TICK_SCHEDULE}-") for anchor in found)
    listed = {w["workflowID"] for w in client.get("/api/ops/wf?name=ScheduledTick&limit=200").json()}
    assert set(found) <= listed
    hidden = {w["workflowID"] for w in client.get("/api/ops/wf?hideInternal=true&limit=200").json()}
    assert not hidden & listed
    assert ensure_schedule(settings) is True  # idempotent
    assert len(DBOS.list_schedules()) == 1
    assert ensure_schedule(settings.model_copy(update={"scheduled_tick_cron": "*/30 * * * * *"})) is True
    assert DBOS.get_schedule(TICK_SCHEDULE)["schedule"] == "*/30 * * * * *"  # type: ignore[index]
    assert ensure_schedule(settings.model_copy(update={"scheduled_tick_cron": "off"})) is False
    assert DBOS.get_schedule(TICK_SCHEDULE) is None
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM app.runs")).scalar_one() == 0
