"""Proof workflows from the runbooks: the crash demo and the slow step (mark s1 → durable sleep → mark s2)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from dbos import DBOS, DBOSClient, EnqueueOptions

from kodo.store import marks
from kodo.workflows.runtime import transact


def _mark(conn: sa.Connection, workflow_id: str, step: str) -> None:
    marks.add(conn, workflow_id, step)


def _mark_sleep_mark(workflow_id: str, sleep_ms: int) -> dict[str, Any]:
    """The proof body both workflows share: the same three checkpoints in the same order."""
    transact("mark-s1", _mark, workflow_id, "s1")
    DBOS.sleep(sleep_ms / 1000)
    transact("mark-s2", _mark, workflow_id, "s2")
    return {"workflowId": workflow_id, "sleepMs": sleep_ms}


@DBOS.workflow(name="CrashDemo", max_recovery_attempts=10)
def crash_demo(workflow_id: str, sleep_ms: int) -> dict[str, Any]:
    """Mark s1, sleep durably, mark s2: a kill -9 during the sleep still ends with {s1: 1, s2: 1}."""
    return _mark_sleep_mark(workflow_id, sleep_ms)


@DBOS.workflow(name="SlowStep", max_recovery_attempts=3)
def slow_step(workflow_id: str, sleep_ms: int) -> dict[str, Any]:
    """The cancel/resume fixture: the same shape as the crash demo."""
    return _mark_sleep_mark(workflow_id, sleep_ms)


def start_proof(client: DBOSClient, *, name: str, workflow_id: str, sleep_ms: int, app_version: str) -> str:
    """Enqueue a proof workflow on controlQ (idempotent by workflow id)."""
    options: EnqueueOptions = {
        "workflow_name": name,
        "queue_name": "controlQ",
        "workflow_id": workflow_id,
        "priority": 1,
        "app_version": app_version,
    }
    return client.enqueue(options, workflow_id, sleep_ms).get_workflow_id()
