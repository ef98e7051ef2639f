"""The stranded-work watchdog: PENDING workflows of a live executor that no thread runs any more.

DBOS recovers an executor's PENDING workflows only when that executor starts, and kodo's recovery leader
only those of executors that stopped heartbeating. A workflow whose thread died while its process lives on
(an error in DBOS's own bookkeeping during a Postgres outage, any thread death) matched neither and stayed
PENDING until someone restarted the process (issue #26). So, every heartbeat round:

* each worker lists the workflows DBOS has PENDING for its own executor, removes those with an execution
  running in the process (``live``), and records the rest in ``app.stranded_workflows`` (``since`` = first
  seen). One still stranded twice ``KODO_HEARTBEAT_INTERVAL_SEC`` (at least 2 s) later — long past the
  moment between a dequeue and its thread starting — is re-enqueued as DBOS's start-up recovery does it
  (:func:`reenqueue`), once: the re-enqueue only matches a row still PENDING for this executor, and the
  next dequeue runs it from its last checkpoint. Audited as ``op: recover``, actor ``watchdog:<executor>``.
* the recovery leader does the same for rows that a live executor reported but did not recover within
  twice that time (its watchdog is wedged), actor ``recovery-leader:<executor>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
import structlog
from dbos import DBOSClient
from dbos._utils import INTERNAL_QUEUE_NAME

from kodo.ops.targets import audit, resolve
from kodo.settings import Settings
from kodo.store import dbos_workflows, executors, stranded

# This process's running workflow ids; None when it cannot tell (its threads are all busy): no round then.
LiveWorkflows = Callable[[], set[str] | None]
log = structlog.get_logger("kodo.recovery")


def grace_sec(settings: Settings) -> float:
    """How long a workflow must stay stranded before it is recovered."""
    return max(2.0, 2 * settings.heartbeat_interval_sec)


def reenqueue(client: DBOSClient, workflow_id: str, executor_id: str) -> bool:
    """Put one PENDING workflow of ``executor_id`` back on its queue, as DBOS's start-up recovery does.

    DBOS internals, in this one place: DBOS 3.4 has no public call that recovers one workflow of a live
    executor (``resume_workflow`` also clears its recovery count and deduplication id). This is the step
    ``dbos._recovery._recover_workflow`` runs; it matches only a row still PENDING for ``executor_id``.
    """
    system_database = client._sys_db
    return bool(system_database.reenqueue_for_recovery(workflow_id, [executor_id], INTERNAL_QUEUE_NAME))


def _recover(
    engine: sa.Engine, client: DBOSClient, row: stranded.Stranded, *, actor: str, reason: str
) -> dict[str, Any] | None:
    if not reenqueue(client, row.workflow_id, row.executor_id):
        return None
    with engine.begin() as conn:
        stranded.mark_recovered(conn, row.workflow_id, actor)
        audit(conn, resolve(conn, row.workflow_id), "recover", row.workflow_id, actor, reason, executor=row.executor_id)
    log.warning("recovered a stranded workflow", workflow_id=row.workflow_id, executor=row.executor_id, by=actor)
    return {"workflowID": row.workflow_id, "action": "recovered-stranded", "executor": row.executor_id, "by": actor}


def watch_once(
    engine: sa.Engine, client: DBOSClient, settings: Settings, *, me: str, live: LiveWorkflows
) -> list[dict[str, Any]]:
    """One watchdog round for this worker's executor ``me``; returns what it recovered."""
    with engine.connect() as conn:
        pending = dbos_workflows.pending_of(conn, [me])
    running = live()
    if running is None:
        return []
    candidates = [row.workflow_id for row in pending if row.workflow_id not in running]
    with engine.begin() as conn:
        rows = stranded.observe(conn, me, candidates)
    grace_ms = grace_sec(settings) * 1000
    actions = []
    for row in rows:
        if row.recovered_at is not None or row.age_ms < grace_ms:
            continue
        running = live()  # again: an execution may have started since the list was read
        if running is None or row.workflow_id in running:
            continue
        done = _recover(engine, client, row, actor=f"watchdog:{me}", reason="PENDING with no thread in its process")
        if done is not None:
            actions.append(done)
    return actions


def lead_once(engine: sa.Engine, client: DBOSClient, settings: Settings, *, me: str) -> list[dict[str, Any]]:
    """As recovery leader: recover what live executors reported stranded but did not recover themselves."""
    with engine.connect() as conn:
        alive = [e.executor_id for e in executors.list_all(conn) if e.alive(settings.executor_dead_after_sec)]
        rows = stranded.of_executors(conn, [e for e in alive if e != me])
    late_ms = 2 * grace_sec(settings) * 1000
    actions = []
    for row in rows:
        if row.recovered_at is not None or row.age_ms < late_ms:
            continue
        reason = f"executor {row.executor_id} reported it stranded for {row.age_ms // 1000}s without recovering it"
        done = _recover(engine, client, row, actor=f"recovery-leader:{me}", reason=reason)
        if done is not None:
            actions.append(done)
    return actions
