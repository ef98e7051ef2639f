"""The ``kodo_workflow_done`` trigger and the per-process listener that wakes a fan-out's parent."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import wait_status, wait_until
from kodo.database import libpq_url
from kodo.main import Worker
from kodo.settings import Settings
from kodo.store import completion_trigger
from kodo.workflows import completions

TERMINAL = {"SUCCESS", "ERROR", "CANCELLED"}


def _run(client: TestClient, goal: str = "completions") -> str:
    """Start an auto-approved run and return its workflow id (= intent id)."""
    response = client.post("/api/intents", json={"goal": goal, "inputs": {}, "constraints": {}})
    assert response.status_code == 201, response.text
    intent = str(response.json()["intentId"])
    body = {"intentId": intent, "queuePartitionKey": "tenant-a", "autoApprove": True}
    started = client.post("/api/runs", json=body)
    assert started.status_code in {200, 201}, started.text
    return intent


def _listen(settings: Settings) -> psycopg.Connection[tuple[Any, ...]]:
    assert settings.database_url is not None
    conn = psycopg.connect(libpq_url(settings.database_url), autocommit=True)
    conn.execute(f"LISTEN {completion_trigger.CHANNEL}")
    return conn


def _drain(conn: psycopg.Connection[tuple[Any, ...]], quiet: float = 0.5) -> list[str]:
    """Every notification received so far (and within ``quiet`` seconds more), in order."""
    payloads: list[str] = []
    while True:
        batch = [note.payload for note in conn.notifies(timeout=quiet)]
        if not batch:
            return payloads
        payloads += batch


def _children(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT workflow_uuid FROM dbos.workflow_status WHERE queue_name = 'sbxQ' ORDER BY 1")
        )
        return list(rows.scalars())


class Recording(completions.Completions):
    """A listener that remembers the ids it was asked to expect and the ids notified to it."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.expected: list[str] = []
        self.delivered: list[str] = []
        self.handed: list[completions.Waiter] = []

    def expect(self, workflow_id: str) -> completions.Waiter:
        self.expected.append(workflow_id)
        waiter = super().expect(workflow_id)
        self.handed.append(waiter)
        return waiter

    def _deliver(self, workflow_id: str) -> None:
        self.delivered.append(workflow_id)
        super()._deliver(workflow_id)


def test_the_template_carries_the_trigger_and_install_is_idempotent(engine: sa.Engine) -> None:
    """A cloned test database has the current trigger, and installing it again changes nothing."""
    with engine.begin() as conn:
        assert completion_trigger.installed_version(conn) == completion_trigger.VERSION
        assert completion_trigger.install(conn) is False


def test_trigger_notifies_once_per_finished_sandbox_child_only(
    client: TestClient, engine: sa.Engine, settings: Settings
) -> None:
    """A real run notifies each ExecuteTask child's id exactly once, and never a RunIntent (or other) id."""
    listener = _listen(settings)
    try:
        intent = _run(client)
        assert wait_status(client, intent, TERMINAL)["status"] == "SUCCESS"
        payloads = _drain(listener)
    finally:
        listener.close()
    children = _children(engine)
    assert children and sorted(payloads) == children
    assert intent not in payloads
    with engine.connect() as conn:
        names = conn.execute(
            sa.text("SELECT DISTINCT name FROM dbos.workflow_status WHERE workflow_uuid = ANY(:ids)"),
            {"ids": payloads},
        )
        assert list(names.scalars()) == ["ExecuteTask"]


def test_trigger_covers_cancel_and_dead_letter_but_not_other_rows(engine: sa.Engine, settings: Settings) -> None:
    """CANCELLED/MAX_RECOVERY rows that were on sbxQ notify though DBOS clears queue_name; other updates do not."""
    rows = {
        "t-cancel": ("ExecuteTask", "sbxQ"),
        "t-dead": ("ExecuteTask", "sbxQ"),
        "t-resumed": ("ExecuteTask", "_dbos_internal_queue"),
        "t-active": ("ExecuteTask", "sbxQ"),
        "parent": ("RunIntent", "intentQ"),
        "direct": ("Other", None),
    }
    with engine.begin() as conn:
        for wid, (name, queue) in rows.items():
            conn.execute(
                sa.text(
                    "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, queue_name) "
                    "VALUES (:w, 'PENDING', :n, :q)"
                ),
                {"w": wid, "n": name, "q": queue},
            )
    listener = _listen(settings)
    try:
        with engine.begin() as conn:
            update = "UPDATE dbos.workflow_status SET status = :s, queue_name = NULL WHERE workflow_uuid = :w"
            conn.execute(sa.text(update), {"s": "CANCELLED", "w": "t-cancel"})
            conn.execute(sa.text(update), {"s": "MAX_RECOVERY_ATTEMPTS_EXCEEDED", "w": "t-dead"})
            conn.execute(sa.text(update), {"s": "ERROR", "w": "t-resumed"})
            conn.execute(sa.text(update), {"s": "ENQUEUED", "w": "t-active"})  # not terminal
            conn.execute(sa.text(update), {"s": "SUCCESS", "w": "parent"})
            conn.execute(sa.text(update), {"s": "SUCCESS", "w": "direct"})
            conn.execute(sa.text("UPDATE dbos.workflow_status SET updated_at = updated_at + 1"))  # status not set
            conn.execute(sa.text("UPDATE dbos.workflow_status SET status = status WHERE workflow_uuid = 't-cancel'"))
        assert sorted(_drain(listener)) == ["t-cancel", "t-dead", "t-resumed"]
    finally:
        listener.close()


def test_listener_wakes_waiters_registered_before_their_children_ran(
    client: TestClient, worker: Worker, settings: Settings, engine: sa.Engine
) -> None:
    """fan_out registers a waiter per child before enqueueing it, and each is woken by its own notification."""
    assert settings.database_url is not None
    recording = Recording(settings.database_url).start()
    assert recording.listening
    completions.install(recording)
    try:
        intent = _run(client)
        assert wait_status(client, intent, TERMINAL)["status"] == "SUCCESS"
        children = _children(engine)
        assert sorted(recording.expected) == children
        wait_until(lambda: sorted(recording.delivered) == children, timeout=5, what="every child delivered")
        assert all(waiter.woken for waiter in recording.handed)
        assert recording.waiting() == 0  # fan_out forgot its waiters
    finally:
        completions.install(worker.listener)
        recording.stop()


def test_listener_times_out_without_a_notification_and_wakes_on_one(settings: Settings) -> None:
    """A waiter with no notification returns False at its timeout; a pg_notify for its id wakes it."""
    assert settings.database_url is not None
    listener = completions.Completions(settings.database_url).start()
    try:
        assert listener.listening
        quiet, woken = listener.expect("wf-quiet"), listener.expect("wf-woken")
        begun = time.monotonic()
        assert quiet.wait(0.3) is False and time.monotonic() - begun >= 0.3
        with psycopg.connect(libpq_url(settings.database_url), autocommit=True) as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (completion_trigger.CHANNEL, "wf-woken"))
        assert woken.wait(5.0) is True and quiet.woken is False
        listener.forget("wf-quiet")
        listener.forget("wf-woken")
        assert listener.waiting() == 0
    finally:
        listener.stop()
    assert not listener.listening


def test_listener_reconnects_and_wakes_everyone_when_its_connection_drops(settings: Settings) -> None:
    """A killed LISTEN connection wakes every registered waiter (it may have missed one) and is re-made."""
    assert settings.database_url is not None
    listener = completions.Completions(settings.database_url).start()
    try:
        waiter = listener.expect("wf-orphan")
        with psycopg.connect(libpq_url(settings.database_url), autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (listener.backend_pid,))
        assert waiter.wait(5.0) is True
        wait_until(lambda: listener.listening and listener.connections == 2, timeout=10, what="reconnected")
        again = listener.expect("wf-after")
        assert again.woken is False
        with psycopg.connect(libpq_url(settings.database_url), autocommit=True) as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (completion_trigger.CHANNEL, "wf-after"))
        assert again.wait(5.0) is True
    finally:
        listener.stop()


def test_runs_complete_with_the_listener_stopped_or_not_installed(client: TestClient, worker: Worker) -> None:
    """With the listener stopped (waiters come pre-woken) or uninstalled, fan_out falls back to polling."""
    assert worker.listener is not None
    worker.listener.stop()
    assert worker.listener.expect("anything").woken is True
    stopped = _run(client, "listener stopped")
    assert wait_status(client, stopped, TERMINAL)["status"] == "SUCCESS"
    completions.install(None)
    uninstalled = _run(client, "listener not installed")
    assert wait_status(client, uninstalled, TERMINAL)["status"] == "SUCCESS"
