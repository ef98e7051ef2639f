"""Webhook retention: the ``WebhookRetention`` schedule keeps the webhook tables bounded.

* DBOS schedule ``kodo-webhook-retention`` (``KODO_WEBHOOK_RETENTION_CRON``, default hourly, on controlQ; no
  backfill: a missed sweep is caught up by the next one) runs :func:`webhook_retention`, which deletes, in
  batches of :data:`BATCH` rows, each batch its own datasource transaction:
  ``delivered`` and ``dead`` deliveries (with their attempts) last changed more than
  ``KODO_WEBHOOK_RETENTION_DAYS`` ago, then events that old with no delivery left, then subscriptions
  stopped that long ago with none left. A ``pending`` delivery, its event, and an event not yet fanned out
  are never deleted.
* At most :data:`MAX_BATCHES` batches per table per sweep, so one sweep is bounded even after a long
  outage; the rest waits for the next sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypedDict

import sqlalchemy as sa
import structlog
from dbos import DBOS

from kodo import faults
from kodo.settings import Settings
from kodo.store import webhooks
from kodo.workflows import timers
from kodo.workflows.runtime import services, transact

log = structlog.get_logger("kodo")

RETENTION_WORKFLOW = "WebhookRetention"
RETENTION_SCHEDULE = "kodo-webhook-retention"
BATCH = 1000
MAX_BATCHES = 50


class Swept(TypedDict):
    deliveries: int
    events: int
    subscriptions: int


def _sweep_table(name: str, delete: Callable[[sa.Connection, int, int], int], days: int) -> int:
    total = 0
    for _ in range(MAX_BATCHES):
        deleted = transact(name, delete, days, BATCH)
        faults.hit("webhooks.retention_batch")
        total += deleted
        if deleted < BATCH:
            break
    return total


def sweep(days: int) -> Swept:
    """Finished deliveries, then spent events, then stopped subscriptions older than ``days`` (in a workflow)."""
    return {
        "deliveries": _sweep_table("webhook.retention.deliveries", webhooks.delete_finished_deliveries, days),
        "events": _sweep_table("webhook.retention.events", webhooks.delete_spent_events, days),
        "subscriptions": _sweep_table("webhook.retention.subscriptions", webhooks.delete_stopped_subscriptions, days),
    }


@DBOS.workflow(name=RETENTION_WORKFLOW, max_recovery_attempts=10)
def webhook_retention(scheduled_at: datetime, context: Any) -> None:
    """One sweep with ``KODO_WEBHOOK_RETENTION_DAYS``; logs what it deleted."""
    del context
    swept = sweep(services().settings.webhook_retention_days)
    log.info("webhook retention sweep", scheduled_at=str(scheduled_at), **swept)


def ensure_retention_schedule(settings: Settings) -> bool:
    """Create the sweep's schedule once (after launch); True if it is active. ``off`` removes it; a changed
    cron replaces it."""
    return timers.put_schedule(RETENTION_SCHEDULE, webhook_retention, settings.webhook_retention_cron, backfill=False)
