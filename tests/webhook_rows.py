"""Webhook rows written straight through kodo.store.webhooks, aged at will: the retention tests' fixtures."""

from __future__ import annotations

import sqlalchemy as sa

from kodo.store import webhooks as store
from kodo.workflows.webhooks import WORKFLOW_PREFIX


def subscription(conn: sa.Connection, subscription_id: str) -> None:
    store.create_subscription(
        conn,
        subscription_id=subscription_id,
        tenant="*",
        partitions=None,
        url="http://127.0.0.1:9/hooks",
        events=["run.failed"],
        sealed_secret="fernet:not-a-real-token",
        description=None,
        created_by=None,
    )


def delivery(conn: sa.Connection, subscription_id: str, state: str, age_days: float) -> tuple[str, str]:
    """An event fanned out to one delivery in ``state``, with one attempt, last changed ``age_days`` ago."""
    event_id = store.record_event(conn, "run.failed", {"runId": "run_x"})
    store.mark_dispatched(conn, [event_id])
    delivery_id = store.add_delivery(conn, event_id, subscription_id, WORKFLOW_PREFIX)
    assert delivery_id is not None
    store.record_attempt(conn, delivery_id, round_number=0, attempt=1, status=500, error="HTTP 500", state=state)
    ago = "clock_timestamp() - make_interval(secs => :days * 86400)"
    conn.execute(
        sa.text(f"UPDATE app.webhook_deliveries SET updated_at = {ago}, created_at = {ago} WHERE id = :id"),
        {"id": delivery_id, "days": age_days},
    )
    conn.execute(
        sa.text(f"UPDATE app.webhook_events SET created_at = {ago} WHERE id = :id"),
        {"id": event_id, "days": age_days},
    )
    return event_id, delivery_id
