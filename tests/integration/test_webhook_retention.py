"""Webhook retention: the scheduled sweep deletes old finished rows in batches and never a pending one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from dbos import DBOS

from kodo.main import Worker
from kodo.settings import Settings
from kodo.store import webhooks as store
from kodo.workflows import webhook_retention
from webhook_rows import delivery, subscription


def ids(conn: sa.Connection, table: str) -> set[str]:
    return set(conn.execute(sa.text(f"SELECT id FROM app.{table}")).scalars())


def test_the_sweep_deletes_old_finished_rows_and_keeps_pending_ones(
    worker: Worker, engine: sa.Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old delivered/dead deliveries (with attempts), their events and old stopped subscriptions go; a pending
    delivery of any age, its event, an undispatched event and anything younger than the retention stay."""
    assert settings.webhook_retention_days == 14
    monkeypatch.setattr(webhook_retention, "BATCH", 2)  # several batches per table in one sweep
    assert worker.dispatcher is not None
    worker.dispatcher.stop()  # keeps the undispatched event undispatched (the sweep must not touch it)
    with engine.begin() as conn:
        subscription(conn, "whs_live")
        subscription(conn, "whs_stopped")
        subscription(conn, "whs_recent_stop")
        old = [delivery(conn, "whs_live", state, 30) for state in ("delivered", "dead", "delivered", "dead", "dead")]
        stopped_old = delivery(conn, "whs_stopped", "delivered", 30)
        pending_old = delivery(conn, "whs_live", "pending", 60)
        young = delivery(conn, "whs_live", "delivered", 13)
        undispatched = store.record_event(conn, "run.failed", {"runId": "run_y"})
        unheard = store.record_event(conn, "run.failed", {"runId": "run_z"})  # fanned out to nobody
        store.mark_dispatched(conn, [unheard])
        conn.execute(
            sa.text(
                "UPDATE app.webhook_events SET created_at = clock_timestamp() - interval '90 days' WHERE id = ANY(:ids)"
            ),
            {"ids": [undispatched, unheard]},
        )
        store.delete_subscription(conn, "whs_stopped", None)
        store.delete_subscription(conn, "whs_recent_stop", None)
        stop_time = "clock_timestamp() - interval '20 days'"
        conn.execute(sa.text(f"UPDATE app.webhook_subscriptions SET deleted_at = {stop_time} WHERE id = 'whs_stopped'"))

    DBOS.start_workflow(webhook_retention.webhook_retention, datetime.now(UTC), None).get_result()

    with engine.connect() as conn:
        assert ids(conn, "webhook_deliveries") == {pending_old[1], young[1]}
        assert ids(conn, "webhook_events") == {pending_old[0], young[0], undispatched}
        assert ids(conn, "webhook_subscriptions") == {"whs_live", "whs_recent_stop"}
        left = set(conn.execute(sa.text("SELECT delivery_id FROM app.webhook_attempts")).scalars())
        assert left == {pending_old[1], young[1]}
    assert all(d not in left for _, d in [*old, stopped_old])

    again = DBOS.start_workflow(sweep_again, settings.webhook_retention_days).get_result()
    assert again == {"deliveries": 0, "events": 0, "subscriptions": 0}


@DBOS.workflow(name="test.webhookRetentionSweep")
def sweep_again(days: int) -> webhook_retention.Swept:
    return webhook_retention.sweep(days)


def test_the_retention_schedule_follows_its_setting(worker: Worker, settings: Settings) -> None:
    """The sweep's DBOS schedule is created from KODO_WEBHOOK_RETENTION_CRON, replaced on a change, removed by off."""
    name = webhook_retention.RETENTION_SCHEDULE
    assert DBOS.get_schedule(name) is None  # the suite runs with off
    hourly = settings.model_copy(update={"webhook_retention_cron": "0 0 * * * *"})
    assert webhook_retention.ensure_retention_schedule(hourly) is True
    assert webhook_retention.ensure_retention_schedule(hourly) is True  # idempotent
    assert DBOS.get_schedule(name)["schedule"] == "0 0 * * * *"  # type: ignore[index]
    daily = settings.model_copy(update={"webhook_retention_cron": "0 30 3 * * *"})
    assert webhook_retention.ensure_retention_schedule(daily) is True
    assert DBOS.get_schedule(name)["schedule"] == "0 30 3 * * *"  # type: ignore[index]
    assert webhook_retention.ensure_retention_schedule(settings) is False
    assert DBOS.get_schedule(name) is None
