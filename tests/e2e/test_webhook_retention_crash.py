"""kill -9 of a worker in the middle of a webhook retention sweep: after a restart DBOS finishes that sweep, and
it has deleted exactly the old finished rows (never a pending one)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from helpers import wait_until
from processes import KodoProcess, clean_env, free_port
from webhook_rows import delivery, subscription


def _ids(engine: sa.Engine, table: str) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(f"SELECT id FROM app.{table}")).scalars())


def _sweeps(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT workflow_uuid, status FROM dbos.workflow_status WHERE name = 'WebhookRetention'")
        )
        return {row.workflow_uuid: row.status for row in rows}


def test_kill_9_between_retention_batches_is_finished_by_recovery(
    engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    """The sweep dies after its first batch committed; the restarted worker recovers it to SUCCESS, old
    delivered/dead deliveries and their events are gone, a pending delivery and its event stay."""
    with engine.begin() as conn:
        subscription(conn, "whs_crash")
        old = [delivery(conn, "whs_crash", state, 30) for state in ("delivered", "dead", "delivered")]
        pending = delivery(conn, "whs_crash", "pending", 30)
        young = delivery(conn, "whs_crash", "delivered", 1)
    home = tmp_path / "home"
    env = clean_env(
        DATABASE_URL=database_url,
        KODO_HOME=str(home),
        PORT=str(free_port()),
        ADMIN_PORT=str(free_port()),
        KODO_WEBHOOK_RETENTION_CRON="* * * * * *",
        KODO_FAULT_POINTS="webhooks.retention_batch:kill",
    )
    up = KodoProcess(["up"], env, tmp_path / "up.log").start()  # no health wait: the first sweep may kill it first
    assert up.proc is not None
    try:
        up.proc.wait(timeout=120)  # the armed fault point SIGKILLs the process itself
    finally:
        up.stop()
    assert up.proc.returncode == -9, up.tail()
    killed = {wid for wid, status in _sweeps(engine).items() if status == "PENDING"}
    assert len(killed) == 1 and _ids(engine, "webhook_deliveries") == {pending[1], young[1]}  # batch 1 committed
    assert {e for e, _ in old} <= _ids(engine, "webhook_events")  # the events' batch had not run

    up.env.pop("KODO_FAULT_POINTS")
    up.env["KODO_WEBHOOK_RETENTION_CRON"] = "off"  # no new sweep: only recovery can finish the killed one
    up.health_url = f"http://127.0.0.1:{env['PORT']}/healthz"
    up.start()
    try:
        wait_until(
            lambda: all(status == "SUCCESS" for status in _sweeps(engine).values()), timeout=120, what="sweeps done"
        )
    finally:
        up.stop()
    assert set(_sweeps(engine)) >= killed
    assert _ids(engine, "webhook_deliveries") == {pending[1], young[1]}
    assert _ids(engine, "webhook_events") == {pending[0], young[0]}
    assert _ids(engine, "webhook_subscriptions") == {"whs_crash"}
