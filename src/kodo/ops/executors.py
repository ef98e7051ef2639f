"""Live workers and dead-executor recovery (DBOS alone recovers only its own executor id).

Every worker process (``kodo up``, ``kodo worker``) runs a ``Heartbeat``: it registers its row in
``app.executors`` and refreshes ``heartbeat_at`` every ``KODO_HEARTBEAT_INTERVAL_SEC``. Each one
also tries to take a session-level Postgres advisory lock; the holder is the **recovery leader**
(the lock dies with its connection, so a killed leader is replaced at the next heartbeat). Each
round the leader looks for executors silent longer than ``KODO_EXECUTOR_DEAD_AFTER_SEC`` and their
``PENDING`` workflows:

* a live executor serves the workflow's application version → resumed on its own queue (partition and
  priority kept); a live worker dequeues it and DBOS re-runs it from its last checkpoint. Audited as
  ``op: recover`` with actor ``recovery-leader:<executor>``, in the resume's own transaction.
* nobody serves the version → left alone and reported as *version-stranded* (executors view and
  diagnosis): resume would park it forever; fork to a served version is the operator's call.

Each round also runs the stranded-work watchdog (``kodo.ops.stranded``) for this worker's own executor,
and, as leader, for live executors that reported stranded work without recovering it. A round that meets a
Postgres outage logs once when the outage starts and once when it ends (``kodo.outages.OutageLog``).
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import sqlalchemy as sa
import structlog
from dbos import DBOSClient

from kodo import faults, outages
from kodo.ops import stranded, workflows
from kodo.ops.context import Ops
from kodo.ops.targets import audit, resolve
from kodo.settings import Settings
from kodo.store import dbos_control, dbos_workflows, executors
from kodo.store import executions as sandbox_executions
from kodo.store import stranded as stranded_store

LEADER_LOCK = 0x6B6F646F_0002  # "kodo" + 2: the recovery leader
log = structlog.get_logger("kodo.recovery")


def recover_once(engine: sa.Engine, settings: Settings, *, me: str) -> list[dict[str, Any]]:
    """One recovery round (call as leader): resume what dead executors left PENDING; returns the actions."""
    with engine.connect() as conn:
        dead = [e for e in executors.silent(conn, settings.executor_dead_after_sec) if e.executor_id != me]
        live = executors.live_versions(conn, settings.executor_dead_after_sec)
        pending = dbos_workflows.pending_of(conn, [e.executor_id for e in dead])
    ages = {e.executor_id: e.heartbeat_age_ms for e in dead}
    actions = []
    for row in pending:
        if row.app_version not in live:
            actions.append({"workflowID": row.workflow_id, "action": "stranded", "appVersion": row.app_version})
            continue
        reason = f"executor {row.executor_id} silent for {ages.get(row.executor_id or '', 0) // 1000}s"
        with engine.begin() as conn:  # the resume and its audit row commit together (see docs/ops.md)
            if dbos_control.status_for_update(conn, row.workflow_id) != "PENDING":
                continue  # finished, cancelled or recovered meanwhile
            dbos_control.resume(conn, row.workflow_id, queue_name=row.queue_name or dbos_control.INTERNAL_QUEUE)
            faults.hit("ops.between_change_and_audit")
            audit(
                conn,
                resolve(conn, row.workflow_id),
                "recover",
                row.workflow_id,
                f"recovery-leader:{me}",
                reason,
                deadExecutor=row.executor_id,
                appVersion=row.app_version,
                liveExecutors=live[row.app_version or ""],
            )
        log.info("recovered workflow of a dead executor", workflow_id=row.workflow_id, dead=row.executor_id)
        actions.append({"workflowID": row.workflow_id, "action": "resumed", "deadExecutor": row.executor_id})
    return actions


class Heartbeat:
    """This process's heartbeat and its bid for recovery leadership (a daemon thread)."""

    def __init__(
        self,
        engine: sa.Engine,
        client: DBOSClient,
        settings: Settings,
        *,
        executor_id: str,
        role: str,
        live: stranded.LiveWorkflows | None = None,
    ):
        self.engine = engine
        self.live = live  # this process's running workflow ids: the watchdog runs when given
        self.client = client
        self.settings = settings
        self.executor_id = executor_id
        self.role = role
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_conn: sa.Connection | None = None
        self._stranded_seen: set[str] = set()
        self._registered = False
        self._outage = outages.OutageLog("heartbeat")

    @property
    def leader(self) -> bool:
        return self._lock_conn is not None

    def register(self) -> None:
        """This process is the executor now: fresh start time and heartbeat, not stopped."""
        with self.engine.begin() as conn:
            executors.register(
                conn,
                executor_id=self.executor_id,
                role=self.role,
                app_version=self.settings.app_version,
                hostname=socket.gethostname(),
                pid=os.getpid(),
            )
            # Its executions left `started` by its previous life (a kill -9) were cut off: say so, and by whom.
            sandbox_executions.interrupt_owned(conn, self.executor_id, found_by=f"{self.executor_id} (start)")
        self._registered = True

    def start(self) -> Heartbeat:
        """Register (unless done) and start beating."""
        if not self._registered:
            self.register()
        self._thread = threading.Thread(target=self._loop, name="kodo-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._release()
        try:
            with self.engine.begin() as conn:
                executors.stop(conn, self.executor_id)
        except Exception as error:  # the database may be gone already; the row then just ages out
            log.warning("could not mark executor stopped", error=repr(error))

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_interval_sec):
            try:
                self.tick()
            except Exception as error:
                if not self._outage.failed(error):
                    log.warning("heartbeat round failed", error=repr(error))
                self._release()
            else:
                self._outage.succeeded()

    def tick(self) -> list[dict[str, Any]]:
        """Beat, try to lead, and (as leader) run one recovery round."""
        if self.settings.recovery_enabled and not self.leader:
            self._try_lead()
        with self.engine.begin() as conn:
            executors.beat(conn, self.executor_id, leader=self.leader)
        actions: list[dict[str, Any]] = []
        if self.live is not None:
            actions += stranded.watch_once(self.engine, self.client, self.settings, me=self.executor_id, live=self.live)
        if not self.leader:
            return actions
        actions += stranded.lead_once(self.engine, self.client, self.settings, me=self.executor_id)
        actions += recover_once(self.engine, self.settings, me=self.executor_id)
        audited = workflows.reconcile(self.engine)  # forks a crash left without their audit row
        if audited:
            log.info("audited forks a crash left unaudited", count=audited)
        for item in actions:
            if item["action"] == "stranded" and item["workflowID"] not in self._stranded_seen:
                self._stranded_seen.add(item["workflowID"])
                log.warning("workflow stranded: no live worker serves its version", **item)
        return actions

    def _try_lead(self) -> None:
        conn = self.engine.connect()
        try:
            got = executors.try_lead(conn, LEADER_LOCK)
            conn.commit()
        except Exception:
            conn.close()
            raise
        if got:
            self._lock_conn = conn
            log.info("recovery leader", executor=self.executor_id)
        else:
            conn.close()

    def _release(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        if conn is None:
            return
        try:
            executors.release_lead(conn, LEADER_LOCK)
            conn.commit()
        except Exception as error:
            log.warning("could not release the leader lock", error=repr(error))
        finally:
            conn.close()


def view(ops: Ops) -> dict[str, Any]:
    """``GET /api/ops/executors``: workers, heartbeat age, version, leader; stranded workflows."""
    dead_after = ops.settings.executor_dead_after_sec
    with ops.engine.connect() as conn:
        rows = executors.list_all(conn)
        live = executors.live_versions(conn, dead_after)
        dead_ids = [e.executor_id for e in rows if not e.alive(dead_after)]
        orphaned = dbos_workflows.pending_of(conn, dead_ids)
        unserved = dbos_workflows.unserved(conn, list(live))
        without_thread = stranded_store.of_executors(conn, [e.executor_id for e in rows])
        pending = executors.pending_workflows(conn)
    stranded = {row.workflow_id: row for row in [*orphaned, *unserved] if row.app_version not in live}
    return {
        "executors": [
            {
                "executorId": e.executor_id,
                "role": e.role,
                "appVersion": e.app_version,
                "hostname": e.hostname,
                "pid": e.pid,
                "startedAt": e.started_at.isoformat(),
                "heartbeatAt": e.heartbeat_at.isoformat(),
                "heartbeatAgeMs": e.heartbeat_age_ms,
                "alive": e.alive(dead_after),
                "stopped": e.stopped_at is not None,
                "leader": e.leader_since is not None and e.alive(dead_after),
                "pendingWorkflows": int(pending.get(e.executor_id, 0)),
            }
            for e in rows
        ],
        "liveVersions": live,
        "awaitingRecovery": [
            {"workflowID": r.workflow_id, "name": r.name, "executorId": r.executor_id, "appVersion": r.app_version}
            for r in orphaned
            if r.app_version in live
        ],
        "stranded": [
            {
                "workflowID": r.workflow_id,
                "name": r.name,
                "status": r.status,
                "executorId": r.executor_id,
                "appVersion": r.app_version,
                "reason": f"no live worker serves application version {r.app_version}",
            }
            for r in stranded.values()
        ],
        # PENDING on a live executor with no thread running it (kodo.ops.stranded): being recovered.
        "withoutThread": [
            {
                "workflowID": r.workflow_id,
                "executorId": r.executor_id,
                "since": r.since.isoformat(),
                "recoveredAt": r.recovered_at.isoformat() if r.recovered_at else None,
                "recoveredBy": r.recovered_by,
            }
            for r in without_thread
        ],
        "thresholds": {
            "heartbeatIntervalSec": ops.settings.heartbeat_interval_sec,
            "deadAfterSec": dead_after,
        },
    }
