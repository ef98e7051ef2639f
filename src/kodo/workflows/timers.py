"""Time primitives: the durable sleep utility and the ``ScheduledTick`` schedule.

* ``SleepWorkflow`` (``POST /api/ops/sleep?wf=&sleep=``, controlQ, id = ``wf``): artifact
  ``sleep-before-sleep`` → ``DBOS.sleep`` → artifact ``sleep-after-sleep``. The deadline is the
  before-sleep record's time plus the sleep, and DBOS records the wake-up time when the sleep starts, so
  after a kill -9 and a restart (even one between the record and the sleep) the workflow wakes at the
  original deadline, not a full sleep later. Its artifacts are anchored to the workflow id itself: a utility
  creates no intent and no run, so none can be left ``running``.
* ``ScheduledTick`` (DBOS schedule ``kodo-scheduled-tick``, ``KODO_SCHEDULED_TICK_CRON``, default
  every 30 s, on controlQ) writes one ``ScheduledTick`` artifact per tick, anchored to its DBOS
  workflow id ``sched-kodo-scheduled-tick-<time>``. ``automatic_backfill`` makes a restarted worker
  enqueue the ticks missed while every worker was down (catch-up); the deterministic ids keep
  several workers from firing a tick twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, DBOSClient, EnqueueOptions
from dbos import error as dbos_errors

from kodo import faults
from kodo.identity import artifact_uri
from kodo.models import NewArtifact
from kodo.settings import Settings
from kodo.store import artifacts, clock
from kodo.workflows.runtime import transact

SLEEP_WORKFLOW = "SleepWorkflow"
TICK_WORKFLOW = "ScheduledTick"
TICK_SCHEDULE = "kodo-scheduled-tick"
MAX_SLEEP_MS = 7 * 24 * 3600 * 1000
MIN_SLEEP_S = 0.001


def _record(conn: sa.Connection, anchor: str, step_id: str, inline: dict[str, Any]) -> dict[str, Any]:
    at = clock.now(conn)
    body = {**inline, "at": at.isoformat()}
    artifacts.add(
        conn,
        anchor,
        NewArtifact(
            step_id=step_id, idx=0, kind="json", uri=artifact_uri(anchor, step_id, "", f"{step_id}.json"), inline=body
        ),
    )
    return body


@DBOS.workflow(name=SLEEP_WORKFLOW, max_recovery_attempts=10)
def sleep_workflow(workflow_id: str, sleep_ms: int) -> dict[str, Any]:
    """Record, sleep durably for ``sleep_ms``, record again."""
    before = transact("sleep-before-sleep", _record, workflow_id, "sleep-before-sleep", {"sleepMs": sleep_ms})
    # The deadline is fixed by the checkpointed record, not by when the sleep itself starts: a kill between the
    # two would otherwise make the recovered workflow sleep the whole time again from its recovery.
    deadline = datetime.fromisoformat(before["at"]).timestamp() + sleep_ms / 1000
    faults.hit("sleep.before_sleep")
    # Never 0: DBOS skips a sleep of 0 s without recording it, which would shift the steps after it on a replay
    # of a run that slept (replayed, DBOS's recorded wake-up time wins over the duration asked).
    DBOS.sleep(max(MIN_SLEEP_S, deadline - time.time()))
    after = transact("sleep-after-sleep", _record, workflow_id, "sleep-after-sleep", {"sleepMs": sleep_ms})
    return {"workflowId": workflow_id, "sleepMs": sleep_ms, "sleptAt": before["at"], "wokeAt": after["at"]}


def start_sleep(client: DBOSClient, *, workflow_id: str, sleep_ms: int, app_version: str) -> str:
    """Enqueue the durable sleep on controlQ (idempotent by workflow id)."""
    options: EnqueueOptions = {
        "workflow_name": SLEEP_WORKFLOW,
        "queue_name": "controlQ",
        "workflow_id": workflow_id,
        "priority": 1,
        "app_version": app_version,
    }
    return client.enqueue(options, workflow_id, sleep_ms).get_workflow_id()


def _tick(conn: sa.Connection, workflow_id: str, scheduled_at: str) -> dict[str, Any]:
    lag = clock.ms_since(conn, scheduled_at)
    return _record(conn, workflow_id, TICK_WORKFLOW, {"scheduledAt": scheduled_at, "lagMs": lag})


@DBOS.workflow(name=TICK_WORKFLOW, max_recovery_attempts=10)
def scheduled_tick(scheduled_at: datetime, context: Any) -> None:
    """One tick: an artifact saying when it was due and how late it ran (a caught-up tick is late)."""
    del context
    when = scheduled_at.isoformat() if isinstance(scheduled_at, datetime) else str(scheduled_at)
    workflow_id = DBOS.workflow_id or f"sched-{TICK_SCHEDULE}-{when}"
    transact(TICK_WORKFLOW, _tick, workflow_id, when)


def ensure_schedule(settings: Settings) -> bool:
    """Create the tick schedule once (call after launch and queue registration); True if it is active.

    ``KODO_SCHEDULED_TICK_CRON=off`` removes it (so no worker fires it). A changed cron replaces it.
    """
    return put_schedule(TICK_SCHEDULE, scheduled_tick, settings.scheduled_tick_cron, backfill=True)


def put_schedule(name: str, workflow: Callable[[datetime, Any], None], cron: str, *, backfill: bool) -> bool:
    """Make DBOS's schedule ``name`` fire ``workflow`` on ``cron`` (on controlQ); True if it is active.
    ``off`` removes it; a changed cron replaces it; a schedule another worker created first is kept."""
    cron = cron.strip()
    existing = DBOS.get_schedule(name)
    if cron.lower() == "off":
        if existing is not None:
            DBOS.delete_schedule(name)
        return False
    if existing is not None:
        if existing["schedule"] == cron:
            return True
        DBOS.delete_schedule(name)
    try:
        DBOS.create_schedule(
            schedule_name=name,
            workflow_fn=workflow,
            schedule=cron,
            automatic_backfill=backfill,
            queue_name="controlQ",
        )
    except dbos_errors.DBOSException as error:
        if "already exists" not in str(error):  # another worker created it first
            raise
    return True
