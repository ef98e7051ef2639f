"""A Postgres outage with kodo left running (issue #26): nothing is stranded, every workflow finishes once.

Each test owns an embedded Postgres under its tmp dir, so it can stop it (``kodo.chaos.outage``) while the
kodo processes keep running; the session's shared server is never touched.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from helpers import oracle_violations, wait_until
from kodo.chaos.outage import postgres_down
from kodo.database import EmbeddedPostgres, sqlalchemy_url
from processes import KodoProcess, Spawner

SLEEP_MS = 3000
OUTAGE_SEC = 6.0  # longer than the durable sleeps: they wake up inside it
TERMINAL = {"SUCCESS", "ERROR", "CANCELLED"}


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """kodo's home with its own embedded Postgres, started here and stopped at the end."""
    home = tmp_path / "home"
    server = EmbeddedPostgres(home)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server.start()
    try:
        yield home
    finally:
        server.stop()


@pytest.fixture
def engine(home: Path) -> Iterator[sa.Engine]:
    # pre-ping: this engine's pooled connections die with the server in the outage
    engine = sa.create_engine(sqlalchemy_url(EmbeddedPostgres(home).url()), pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture
def spawn(tmp_path: Path, home: Path) -> Iterator[Callable[..., KodoProcess]]:
    """kodo processes on the embedded server under ``home`` (no DATABASE_URL); stopped by PID at the end."""
    spawner = Spawner(tmp_path, home, KODO_HEARTBEAT_INTERVAL_SEC="0.5", CHAOS_SLEEP_EXECUTE="4000")
    yield spawner
    spawner.stop_all()


def _count(engine: sa.Engine, query: str, **params: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(query), params).scalar_one())


def _new_run(base: str, goal: str, **body: object) -> str:
    intent = httpx.post(f"{base}/api/intents", json={"goal": goal, "inputs": {}, "constraints": body.pop("c", {})})
    wid = str(intent.json()["intentId"])
    response = httpx.post(f"{base}/api/runs", json={"intentId": wid, "queuePartitionKey": goal, **body})
    assert response.status_code == 201, response.text
    return wid


def _status(base: str, wid: str) -> str:
    response = httpx.get(f"{base}/api/runs/{wid}", timeout=10)
    return str(response.json().get("status")) if response.status_code == 200 else ""


def _ride_through_an_outage(
    api: str, health: list[str], home: Path, engine: sa.Engine, outage_sec: float = OUTAGE_SEC
) -> None:
    """Sleeps, sandbox children mid-step, parked runs and a gate timing out, then an outage; all finish once."""
    sleeps = [f"outage-sleep-{n}" for n in range(3)]
    for wf in sleeps:
        assert httpx.post(f"{api}/api/ops/sleep?wf={wf}&sleep={SLEEP_MS}").status_code == 202
    workload = {"concurrency": 2, "steps": 2, "sandboxMinutes": 1}
    sandboxed = [_new_run(api, f"sbx{n}", autoApprove=True, workload=workload) for n in range(2)]
    parked = [_new_run(api, f"park{n}") for n in range(3)]
    escalating = _new_run(api, "escalate", c={"planApprovalTimeoutS": 4})
    wait_until(
        lambda: _count(engine, "SELECT count(*) FROM app.artifacts WHERE step_id = 'sleep-before-sleep'") == 3,
        timeout=60,
        what="sleeps asleep",
    )
    wait_until(
        lambda: (
            _count(engine, "SELECT count(*) FROM dbos.workflow_status WHERE name='ExecuteTask' AND status='PENDING'")
            >= 2
        ),
        timeout=60,
        what="sandbox children mid-step",
    )
    for wid in [*parked, escalating]:
        wait_until(lambda wid=wid: _status(api, wid) == "WAITING_INPUT", timeout=60, what=f"{wid} parked")

    with postgres_down(home) as window:
        for url in health:
            down = httpx.get(url, timeout=10)
            assert down.status_code == 503 and down.headers["Retry-After"], down.text
            assert down.json()["ok"] is False and down.json()["reason"]
        read = httpx.get(f"{api}/api/runs/{parked[0]}", timeout=10)
        write = httpx.post(f"{api}/api/intents", json={"goal": "x", "inputs": {}, "constraints": {}}, timeout=10)
        reply = httpx.post(f"{api}/api/runs/{parked[0]}/approve-plan", json={"approvedBy": "a"}, timeout=10)
        for response in (read, write, reply):
            assert response.status_code == 503 and response.headers["Retry-After"], response.text
        wait_until(lambda: window.down_sec >= outage_sec, timeout=outage_sec + 5, interval=0.2, what="outage")

    for url in health:
        wait_until(lambda url=url: httpx.get(url, timeout=10).status_code == 200, timeout=60, what=f"{url} healthy")
    for wid in parked:
        assert httpx.post(f"{api}/api/runs/{wid}/approve-plan", json={"approvedBy": "a"}).status_code == 202
    for wid in [*sandboxed, *parked, escalating]:
        wait_until(lambda wid=wid: _status(api, wid) in TERMINAL, timeout=120 + outage_sec, what=f"{wid} finished")
    wait_until(
        lambda: _count(engine, "SELECT count(*) FROM dbos.workflow_status WHERE status IN ('PENDING','ENQUEUED')") == 0,
        timeout=60,
        what="no workflow left PENDING or ENQUEUED",
    )
    assert {wid: _status(api, wid) for wid in [*sandboxed, *parked]} == dict.fromkeys([*sandboxed, *parked], "SUCCESS")
    escalated = httpx.get(f"{api}/api/runs/{escalating}").json()
    assert escalated["status"] == "ERROR" and escalated["error"]["code"] == "GATE_TIMEOUT"
    with engine.connect() as conn:
        assert oracle_violations(conn) == {}
        statuses = dict(
            conn.execute(
                sa.text("SELECT workflow_uuid, status FROM dbos.workflow_status WHERE workflow_uuid = ANY(:w)"),
                {"w": sleeps},
            ).all()
        )
        woke = conn.execute(sa.text("SELECT count(*) FROM app.artifacts WHERE step_id = 'sleep-after-sleep'"))
        assert woke.scalar_one() == 3
        escalations = conn.execute(sa.text("SELECT count(*) FROM app.artifacts WHERE step_id = 'EscalateTimeout'"))
        assert escalations.scalar_one() == 1
        # the execution ledger: one sandbox row per task (two per sandboxed run, one per parked run), attempt 1
        sandbox_rows = conn.execute(sa.text("SELECT count(*) FROM app.sbx_runs WHERE attempt = 1")).scalar_one()
        retried = conn.execute(sa.text("SELECT count(*) FROM app.sbx_runs WHERE attempt > 1")).scalar_one()
        recovers = "SELECT count(*) FROM app.artifacts WHERE inline->>'op' = 'recover'"
        recovered = conn.execute(sa.text(recovers)).scalar_one()
    assert statuses == dict.fromkeys(sleeps, "SUCCESS")
    assert (sandbox_rows, retried) == (2 * len(sandboxed) + len(parked), 0)
    assert recovered == 0  # within the ceiling no thread gave up: nothing needed the watchdog
    # A workflow between its dequeue and its thread can be seen for a moment by a watchdog round; the next round
    # (every 0.5 s here) forgets it once it has ended.
    stranded = "SELECT count(*) FROM app.stranded_workflows"
    wait_until(lambda: _count(engine, stranded) == 0, timeout=30, what="no workflow left marked stranded")


def test_monolith_rides_through_a_postgres_outage(
    spawn: Callable[..., KodoProcess], home: Path, engine: sa.Engine
) -> None:
    """kodo up, Postgres stopped 6 s mid-work and started, kodo not restarted: all finishes, oracles empty."""
    up = spawn("up", KODO_SCHEDULED_TICK_CRON="*/2 * * * * *")  # scheduled ticks fall due inside the outage too
    api = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    _ride_through_an_outage(api, [f"{api}/healthz"], home, engine)
    after_ms = int(time.time() * 1000)  # the outage is over and all its work finished
    ticks = "SELECT count(*) FROM dbos.workflow_status WHERE name = 'ScheduledTick'"
    # every tick from before and during the outage finishes (one the scheduler started a moment before
    # ``after_ms`` may still be running: given time, not a pass); the scheduler fires again by itself
    wait_until(
        lambda: _count(engine, f"{ticks} AND status <> 'SUCCESS' AND created_at < :t", t=after_ms) == 0,
        timeout=15,
        what="the ticks started before the outage ended",
    )
    assert _count(engine, f"{ticks} AND created_at < :t", t=after_ms) >= 1
    wait_until(
        lambda: _count(engine, f"{ticks} AND status = 'SUCCESS' AND created_at > :t", t=after_ms) >= 1,
        timeout=30,
        what="a tick after the outage",
    )
    assert up.proc is not None and up.proc.poll() is None  # never restarted


def test_split_topology_rides_through_a_postgres_outage(
    spawn: Callable[..., KodoProcess], home: Path, engine: sa.Engine
) -> None:
    """kodo worker + kodo api, the same outage: all finishes, oracles empty, neither process restarted."""
    worker = spawn("worker")
    api_process = spawn("api")
    api = f"http://127.0.0.1:{api_process.port}"  # type: ignore[attr-defined]
    worker_health = f"http://127.0.0.1:{worker.admin_port}/healthz"  # type: ignore[attr-defined]
    _ride_through_an_outage(api, [f"{api}/healthz", worker_health], home, engine)
    for process in (worker, api_process):
        assert process.proc is not None and process.proc.poll() is None


def test_past_the_ceiling_the_watchdog_recovers_what_gave_up(
    spawn: Callable[..., KodoProcess], home: Path, engine: sa.Engine
) -> None:
    """KODO_DB_OUTAGE_MAX_SEC=1, a 6 s outage: threads stop waiting, the watchdog re-runs them; all finish once."""
    # A sandbox task longer than the outage: a task whose record gave up runs again after the database is back.
    up = spawn("up", KODO_DB_OUTAGE_MAX_SEC="1", CHAOS_SLEEP_EXECUTE="7000")
    api = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    sleeps = [f"ceiling-sleep-{n}" for n in range(2)]
    for wf in sleeps:
        assert httpx.post(f"{api}/api/ops/sleep?wf={wf}&sleep={SLEEP_MS}").status_code == 202
    run = _new_run(api, "ceiling", autoApprove=True, workload={"concurrency": 2, "steps": 2, "sandboxMinutes": 1})
    asleep = "SELECT count(*) FROM app.artifacts WHERE step_id = 'sleep-before-sleep'"
    wait_until(lambda: _count(engine, asleep) == 2, timeout=60, what="sleeps asleep")
    mid_step = "SELECT count(*) FROM dbos.workflow_status WHERE name = 'ExecuteTask' AND status = 'PENDING'"
    wait_until(lambda: _count(engine, mid_step) >= 2, timeout=60, what="sandbox children mid-step")
    with postgres_down(home) as window:
        wait_until(lambda: window.down_sec >= OUTAGE_SEC, timeout=OUTAGE_SEC + 5, interval=0.2, what="outage")
    wait_until(lambda: _status(api, run) in TERMINAL, timeout=120, what="the run finished")
    active = "SELECT count(*) FROM dbos.workflow_status WHERE status IN ('PENDING','ENQUEUED')"
    wait_until(lambda: _count(engine, active) == 0, timeout=60, what="nothing left PENDING or ENQUEUED")
    assert _status(api, run) == "SUCCESS"
    # The watchdog forgets a stranded row at its next round once the workflow has a thread again or has ended.
    stranded = "SELECT count(*) FROM app.stranded_workflows"
    wait_until(lambda: _count(engine, stranded) == 0, timeout=30, what="no workflow left marked stranded")
    with engine.connect() as conn:
        assert oracle_violations(conn) == {}
        done = conn.execute(
            sa.text("SELECT count(*) FROM dbos.workflow_status WHERE workflow_uuid = ANY(:w) AND status = 'SUCCESS'"),
            {"w": sleeps},
        )
        assert done.scalar_one() == len(sleeps)
        by_watchdog = "SELECT count(*) FROM app.artifacts WHERE inline->>'op' = 'recover' AND inline->>'actor' LIKE :a"
        recovered = conn.execute(sa.text(by_watchdog), {"a": "watchdog:%"}).scalar_one()
        sandbox = conn.execute(sa.text("SELECT count(*), count(DISTINCT task_key) FROM app.sbx_runs")).one()
    assert recovered >= 1  # the threads that gave up were stranded, and recovered by the watchdog
    # The ledger: one row per task. A task whose record could not be written before the ceiling ran again as
    # its step's next attempt, and its row says so (attempt 2): nothing ran twice that the ledger hides.
    assert tuple(sandbox) == (2, 2)
