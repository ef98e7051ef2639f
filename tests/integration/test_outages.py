"""Outages against a real server: what the classifier calls transient, and the stranded-work watchdog's view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import make_settings, wait_until
from kodo import outages
from kodo.main import Worker
from kodo.ops import stranded as watchdog
from kodo.settings import Settings
from kodo.store import stranded
from kodo.workflows.outage_retry import live_workflow_ids
from ops_helpers import new_run


def _error_of(engine: sa.Engine, statement: str, *setup: str) -> sa.exc.DBAPIError:
    with engine.connect() as conn:
        for line in setup:
            conn.execute(sa.text(line))
        with pytest.raises(sa.exc.DBAPIError) as caught:
            conn.execute(sa.text(statement))
        return caught.value


def test_a_terminated_session_is_transient(engine: sa.Engine) -> None:
    """An administrator shutdown of our session (57P01, what a stopping server sends) is transient."""
    with engine.connect() as victim:
        pid = victim.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with engine.connect() as admin:
            admin.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        with pytest.raises(sa.exc.DBAPIError) as caught:
            victim.execute(sa.text("SELECT 1"))
    assert outages.is_transient(caught.value) and outages.is_outage_error(caught.value)


def test_wrong_statements_are_not_transient(engine: sa.Engine) -> None:
    """A constraint, a bad value, a statement timeout (57014, a cancel): never retried as an outage."""
    duplicate = _error_of(
        engine, "INSERT INTO t VALUES (1)", "CREATE TEMP TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1)"
    )
    bad_value = _error_of(engine, "SELECT CAST('x' AS int)")
    timed_out = _error_of(engine, "SELECT pg_sleep(2)", "SET statement_timeout = 50")
    assert getattr(timed_out.orig, "sqlstate", None) == "57014"
    for error in (duplicate, bad_value, timed_out):
        assert not outages.is_transient(error), error


def test_a_serialization_failure_is_transient_but_no_outage(engine: sa.Engine) -> None:
    """40001 reruns (its transaction rolled back) without starting the outage clock's ceiling."""
    with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as caught:
        conn.execute(sa.text("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$"))
    assert outages.is_transient(caught.value) and not outages.is_outage_error(caught.value)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """A heartbeat too slow to run during the test: the test drives the watchdog rounds itself."""
    return make_settings(database_url, tmp_path / "home", KODO_HEARTBEAT_INTERVAL_SEC="600", CHAOS_SLEEP_EXECUTE="8000")


def _why(client: TestClient, key: str) -> dict[str, Any]:
    response = client.get(f"/api/runs/{key}/diagnosis")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_diagnosis_names_a_stranded_workflow_and_the_watchdog_spares_a_live_one(
    client: TestClient, engine: sa.Engine, settings: Settings, worker: Worker
) -> None:
    """A reported strand reads "stranded since T, recovering"; a watchdog round sees the live thread and drops it."""
    wid = new_run(client, "strand", partition="strand", autoApprove=True)

    def running_child() -> str | None:
        with engine.connect() as conn:
            query = (
                "SELECT workflow_uuid FROM dbos.workflow_status WHERE parent_workflow_id = :p AND status = 'PENDING'"
            )
            return conn.execute(sa.text(query), {"p": wid}).scalar()

    child = wait_until(running_child, timeout=30, what="the sandbox task running")
    me = settings.executor_for("monolith")
    with engine.begin() as conn:
        stranded.observe(conn, me, [child])
    assert _why(client, child)["code"] != "STRANDED"  # seen without a thread just now: not named before the grace
    with engine.begin() as conn:  # as if seen so for longer than the watchdog's grace
        conn.execute(sa.text("UPDATE app.stranded_workflows SET since = since - interval '1 hour'"))
    found = _why(client, child)
    assert found["code"] == "STRANDED", found
    assert f"stranded since {found['details']['strandedSince']}" in found["reason"]
    assert found["reason"].endswith("recovering") and found["details"]["executorId"] == me
    listed = client.get("/api/ops/executors").json()["withoutThread"]
    assert [(item["workflowID"], item["executorId"], item["recoveredAt"]) for item in listed] == [(child, me, None)]
    assert worker.heartbeat is not None
    actions = watchdog.watch_once(engine, worker.heartbeat.client, settings, me=me, live=live_workflow_ids)
    live = live_workflow_ids()
    assert actions == [] and live is not None and child in live
    with engine.connect() as conn:
        assert stranded.of_executors(conn, [me]) == []
    assert _why(client, child)["code"] == "RUNNING"
    client.post(f"/api/ops/wf/{wid}/cancel", json={"actor": "t", "reason": "cleanup"})
    wait_until(lambda: running_child() is None, timeout=30, what="the cancelled task stopped")


def test_the_leader_recovers_what_a_live_executor_reported_but_left(
    engine: sa.Engine, settings: Settings, worker: Worker
) -> None:
    """Another live executor reports a strand and does nothing: the leader re-enqueues it once, and it runs."""
    from kodo.store import executors
    from kodo.workflows.timers import start_sleep

    assert worker.heartbeat is not None
    client = worker.heartbeat.client
    wid = "leader-strand-1"
    # Enqueued for a version nobody serves (so no worker dequeues it), then made what a dead thread of a live
    # executor leaves: PENDING on that executor, for our version.
    start_sleep(client, workflow_id=wid, sleep_ms=10, app_version="v-nobody")
    with engine.begin() as conn:
        executors.register(conn, executor_id="other-exec", role="worker", app_version="v1", hostname="h", pid=1)
        conn.execute(
            sa.text(
                "UPDATE dbos.workflow_status SET status = 'PENDING', executor_id = 'other-exec', "
                "application_version = :v WHERE workflow_uuid = :w"
            ),
            {"v": settings.app_version, "w": wid},
        )
        stranded.observe(conn, "other-exec", [wid])
    me = settings.executor_for("monolith")
    assert watchdog.lead_once(engine, client, settings, me=me) == []  # reported just now: its own watchdog's turn
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE app.stranded_workflows SET since = since - interval '1 hour'"))
    actions = watchdog.lead_once(engine, client, settings, me=me)
    assert actions == [
        {"workflowID": wid, "action": "recovered-stranded", "executor": "other-exec", "by": f"recovery-leader:{me}"}
    ]
    assert watchdog.lead_once(engine, client, settings, me=me) == []  # once: recovered_at is set
    status = "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = :w"
    wait_until(lambda: _scalar(engine, status, w=wid) == "SUCCESS", timeout=30, what="the recovered sleep ran")
    audit = "SELECT count(*) FROM app.artifacts WHERE inline->>'op' = 'recover' AND inline->>'actor' = :a"
    assert _scalar(engine, audit, a=f"recovery-leader:{me}") == 1


def _scalar(engine: sa.Engine, query: str, **params: object) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(query), params).scalar()


def test_the_watchdog_recovers_its_own_stranded_workflow_once(
    engine: sa.Engine, settings: Settings, worker: Worker
) -> None:
    """PENDING on this executor with no thread: seen, then after the grace re-enqueued once, and it runs."""
    from kodo.workflows.timers import start_sleep

    assert worker.heartbeat is not None
    client = worker.heartbeat.client
    me = settings.executor_for("monolith")
    wid = "own-strand-1"
    # What a thread that died leaves: PENDING on this executor, with no execution in this process.
    start_sleep(client, workflow_id=wid, sleep_ms=10, app_version="v-nobody")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE dbos.workflow_status SET status = 'PENDING', executor_id = :e, application_version = :v "
                "WHERE workflow_uuid = :w"
            ),
            {"e": me, "v": settings.app_version, "w": wid},
        )
    assert watchdog.watch_once(engine, client, settings, me=me, live=live_workflow_ids) == []  # first seen
    with engine.connect() as conn:
        assert [row.workflow_id for row in stranded.of_executors(conn, [me])] == [wid]
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE app.stranded_workflows SET since = since - interval '1 hour'"))
    actions = watchdog.watch_once(engine, client, settings, me=me, live=live_workflow_ids)
    assert actions == [{"workflowID": wid, "action": "recovered-stranded", "executor": me, "by": f"watchdog:{me}"}]
    status = "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = :w"
    wait_until(lambda: _scalar(engine, status, w=wid) == "SUCCESS", timeout=30, what="the recovered sleep ran")
    assert watchdog.watch_once(engine, client, settings, me=me, live=live_workflow_ids) == []
    with engine.connect() as conn:
        assert stranded.of_executors(conn, [me]) == []  # no longer stranded: forgotten
