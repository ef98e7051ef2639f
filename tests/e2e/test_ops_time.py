"""Time primitives with real processes: a durable sleep and the tick schedule across kill -9 and ≥35 s down
(one test, because the downtime is the expensive part: both proofs share it), and a kill -9 exactly between
the sleep's before-sleep record and DBOS's sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import httpx
import sqlalchemy as sa

from helpers import wait_until
from processes import KodoProcess


def _artifact_times(engine: sa.Engine, anchor: str) -> dict[str, datetime]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT step_id, created_at FROM app.artifacts WHERE run_id = :a"), {"a": anchor}
        ).all()
    return {step: at for step, at in rows}


def _ticks(engine: sa.Engine) -> list[tuple[str, datetime, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT run_id, CAST(inline->>'scheduledAt' AS timestamptz), CAST(inline->>'lagMs' AS integer) "
                "FROM app.artifacts WHERE step_id = 'ScheduledTick' ORDER BY 2"
            )
        ).all()
    return [(str(r[0]), r[1], int(r[2])) for r in rows]


def test_kill_9_then_35_s_down_sleep_wakes_on_time_and_missed_ticks_catch_up(
    spawn: Callable[..., KodoProcess], engine: sa.Engine
) -> None:
    """kill -9 during a 40 s durable sleep, 36 s down, restart: it wakes at its original deadline; ticks catch up."""
    up = spawn("up", KODO_SCHEDULED_TICK_CRON="*/5 * * * * *")
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    accepted = httpx.post(f"{base}/api/ops/sleep?wf=sleep-k9&sleep=40000")
    assert accepted.status_code == 202 and accepted.json()["workflowID"] == "sleep-k9"
    wait_until(lambda: "sleep-before-sleep" in _artifact_times(engine, "sleep-k9"), what="before-sleep")
    wait_until(lambda: _ticks(engine), timeout=30, what="a first tick")
    up.kill9()
    killed = time.time()
    with engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM dbos.workflow_status WHERE workflow_uuid='sleep-k9'"))
        assert status.scalar() == "PENDING"
    assert "sleep-after-sleep" not in _artifact_times(engine, "sleep-k9")
    time.sleep(36)
    restarting = time.time()  # no tick can run before this: no worker is up
    up.start()
    restarted = time.time()

    def missed() -> list[tuple[str, datetime, int]]:
        return [t for t in _ticks(engine) if killed + 1 < t[1].timestamp() < restarted - 1]

    caught_up = wait_until(lambda: len(missed()) >= 6 and missed(), timeout=40, what="backfilled ticks")
    for run_id, scheduled, lag_ms in caught_up:
        assert run_id.startswith("sched-kodo-scheduled-tick-")
        assert lag_ms >= (restarting - scheduled.timestamp()) * 1000  # it ran after the restart began, late
    times = wait_until(
        lambda: (found := _artifact_times(engine, "sleep-k9")) and "sleep-after-sleep" in found and found,
        timeout=30,
        what="after-sleep",
    )
    began, woke = times["sleep-before-sleep"].timestamp(), times["sleep-after-sleep"].timestamp()
    assert woke - began >= 40.0
    assert woke <= max(began + 40.0, restarted) + 3.0, f"woke {woke - began:.1f}s after it began"

    def final_status() -> str | None:  # the status commits just after the last step's artifact
        with engine.connect() as conn:
            found = conn.execute(sa.text("SELECT status FROM dbos.workflow_status WHERE workflow_uuid='sleep-k9'"))
            return found.scalar()

    wait_until(lambda: final_status() != "PENDING", timeout=10, what="sleep-k9 finished")
    assert final_status() == "SUCCESS"
    with engine.connect() as conn:
        names = conn.execute(
            sa.text("SELECT DISTINCT name FROM dbos.workflow_status WHERE workflow_uuid LIKE 'sched-%'")
        ).scalars()
        assert set(names) == {"ScheduledTick"}
        assert conn.execute(sa.text("SELECT count(*) FROM app.runs")).scalar_one() == 0  # no utility run rows


def test_kill_9_between_the_record_and_the_sleep_still_wakes_at_the_original_deadline(
    spawn: Callable[..., KodoProcess], engine: sa.Engine
) -> None:
    """Killed after the before-sleep record, before DBOS's sleep began, restarted after the deadline: it wakes at
    once, not a whole sleep after the restart (the deadline is the record's time plus the sleep)."""
    sleep_s = 10.0
    up = spawn("up", KODO_FAULT_POINTS="sleep.before_sleep:kill")
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    assert httpx.post(f"{base}/api/ops/sleep?wf=sleep-window&sleep={int(sleep_s * 1000)}").status_code == 202
    up.wait_killed(timeout=60)
    began = _artifact_times(engine, "sleep-window")["sleep-before-sleep"].timestamp()
    time.sleep(max(0.0, began + sleep_s + 1.0 - time.time()))  # down past the deadline
    restarting = time.time()
    up.restart_unarmed()
    times = wait_until(
        lambda: (found := _artifact_times(engine, "sleep-window")) and "sleep-after-sleep" in found and found,
        timeout=30,
        what="after-sleep",
    )
    woke = times["sleep-after-sleep"].timestamp()
    assert woke - began >= sleep_s
    # A recovered sleep that started over would sleep sleep_s from its recovery, after the restart began.
    assert woke < restarting + sleep_s, f"woke {woke - restarting:.1f}s after the restart began"
