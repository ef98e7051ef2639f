"""Webhook subscriptions, the event outbox and deliveries (migration ``0013_webhooks.sql``).

Run and gate events are written by triggers in the transaction of the change that causes them; other
events (``ops.batch_done``, ``budget.exceeded``) by :func:`record_event` in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

import sqlalchemy as sa

from kodo.store import to_json
from kodo.store.statements import sql

# The one list of event types: the API's request schema (``kodo.api.webhooks``), the CLI's choices and the
# check of record_event all read it from here.
EventType = Literal[
    "gate.opened",
    "gate.resolved",
    "gate.timed_out",
    "run.succeeded",
    "run.failed",
    "run.canceled",
    "ops.batch_done",
    "budget.exceeded",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
DeliveryState = Literal["pending", "delivered", "dead"]
DELIVERY_STATES: tuple[str, ...] = get_args(DeliveryState)
CHANNEL = "kodo_webhook_event"


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription:
    id: str
    tenant: str
    partitions: tuple[str, ...] | None
    url: str
    events: tuple[str, ...]
    sealed_secret: str  # fernet:<token> (kodo.sealing); the secret itself is never stored
    description: str | None
    created_by: str | None
    created_at: datetime
    deleted_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    id: str
    seq: int
    type: str
    run_id: str | None
    partition_key: str | None
    data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    id: str
    event_id: str
    event_type: str
    subscription_id: str
    url: str
    state: str
    attempts: int
    redeliveries: int
    workflow_id: str
    last_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    delivery_id: str
    round: int
    attempt: int
    status: int | None
    error: str | None
    at: datetime


def _subscription(row: Any) -> Subscription:
    return Subscription(
        id=row.id,
        tenant=row.tenant,
        partitions=None if row.partitions is None else tuple(row.partitions),
        url=row.url,
        events=tuple(row.events),
        sealed_secret=row.sealed_secret,
        description=row.description,
        created_by=row.created_by,
        created_at=row.created_at,
        deleted_at=row.deleted_at,
    )


def create_subscription(
    conn: sa.Connection,
    *,
    subscription_id: str,
    tenant: str,
    partitions: list[str] | None,
    url: str,
    events: list[str],
    sealed_secret: str,
    description: str | None,
    created_by: str | None,
) -> Subscription:
    row = conn.execute(
        sql(
            "INSERT INTO app.webhook_subscriptions (id, tenant, partitions, url, events, sealed_secret, "
            "description, created_by) "
            "VALUES (:id, :tenant, :partitions, :url, :events, :sealed, :description, :by) RETURNING *"
        ),
        {
            "id": subscription_id,
            "tenant": tenant,
            "partitions": partitions,
            "url": url,
            "events": events,
            "sealed": sealed_secret,
            "description": description,
            "by": created_by,
        },
    ).one()
    return _subscription(row)


def _tenant_clause(tenant: str | None) -> str:
    return "" if tenant is None else "AND tenant = :tenant "


def list_subscriptions(conn: sa.Connection, tenant: str | None) -> list[Subscription]:
    """Live subscriptions, oldest first (only ``tenant``'s when given)."""
    rows = conn.execute(
        sql(
            f"SELECT * FROM app.webhook_subscriptions WHERE deleted_at IS NULL {_tenant_clause(tenant)}"
            "ORDER BY created_at, id"
        ),
        {"tenant": tenant},
    )
    return [_subscription(row) for row in rows]


def get_subscription(conn: sa.Connection, subscription_id: str, tenant: str | None) -> Subscription | None:
    row = conn.execute(
        sql(f"SELECT * FROM app.webhook_subscriptions WHERE id = :id AND deleted_at IS NULL {_tenant_clause(tenant)}"),
        {"id": subscription_id, "tenant": tenant},
    ).one_or_none()
    return None if row is None else _subscription(row)


def delete_subscription(conn: sa.Connection, subscription_id: str, tenant: str | None) -> bool:
    """Stop a subscription (kept, with its deliveries, for the record); False when there is none."""
    row = conn.execute(
        sql(
            "UPDATE app.webhook_subscriptions SET deleted_at = clock_timestamp() "
            f"WHERE id = :id AND deleted_at IS NULL {_tenant_clause(tenant)}RETURNING id"
        ),
        {"id": subscription_id, "tenant": tenant},
    ).one_or_none()
    return row is not None


def record_event(
    conn: sa.Connection,
    event_type: str,
    data: dict[str, Any],
    *,
    run_id: str | None = None,
    partition_key: str | None = None,
) -> str:
    """Write one event to the outbox in the caller's transaction; returns its id (the ``webhook-id``)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type}")
    event_id: str = conn.execute(
        sql(
            "INSERT INTO app.webhook_events (type, run_id, partition_key, data) "
            "VALUES (:type, :run, :partition, CAST(:data AS jsonb)) RETURNING id"
        ),
        {"type": event_type, "run": run_id, "partition": partition_key, "data": to_json(data)},
    ).scalar_one()
    return event_id


def _event(row: Any) -> Event:
    return Event(
        id=row.id,
        seq=row.seq,
        type=row.type,
        run_id=row.run_id,
        partition_key=row.partition_key,
        data=row.data,
        created_at=row.created_at,
    )


def claim_undispatched(conn: sa.Connection, limit: int) -> list[Event]:
    """Events not yet fanned out, oldest first, locked (``SKIP LOCKED``: two dispatchers never take one)."""
    rows = conn.execute(
        sql(
            "SELECT * FROM app.webhook_events WHERE dispatched_at IS NULL ORDER BY seq LIMIT :n FOR UPDATE SKIP LOCKED"
        ),
        {"n": limit},
    )
    return [_event(row) for row in rows]


def get_event(conn: sa.Connection, event_id: str) -> Event | None:
    row = conn.execute(sql("SELECT * FROM app.webhook_events WHERE id = :id"), {"id": event_id}).one_or_none()
    return None if row is None else _event(row)


def subscribers(conn: sa.Connection, event: Event) -> list[Subscription]:
    """Live subscriptions that hear ``event``: its type, created before it, and its run's partition within
    theirs (an event of no partition, like ``ops.batch_done``, only reaches subscriptions of every partition)."""
    rows = conn.execute(
        sql(
            "SELECT * FROM app.webhook_subscriptions WHERE deleted_at IS NULL AND :type = ANY(events) "
            "AND created_at <= :at AND (partitions IS NULL OR CAST(:partition AS text) LIKE ANY(partitions)) "
            "ORDER BY created_at, id"
        ),
        {"type": event.type, "at": event.created_at, "partition": event.partition_key},
    )
    return [_subscription(row) for row in rows]


def add_delivery(conn: sa.Connection, event_id: str, subscription_id: str, workflow_prefix: str) -> str | None:
    """One delivery per (event, subscription); returns its id, or None when it already exists."""
    row = conn.execute(
        sql(
            "INSERT INTO app.webhook_deliveries (id, event_id, subscription_id, workflow_id) "
            "SELECT d.id, :event, :subscription, :prefix || d.id "
            "FROM (SELECT 'whd_' || replace(gen_random_uuid()::text, '-', '') AS id) d "
            "ON CONFLICT (event_id, subscription_id) DO NOTHING RETURNING id"
        ),
        {"event": event_id, "subscription": subscription_id, "prefix": workflow_prefix},
    ).one_or_none()
    return None if row is None else str(row.id)


def mark_dispatched(conn: sa.Connection, event_ids: list[str]) -> None:
    conn.execute(
        sql("UPDATE app.webhook_events SET dispatched_at = clock_timestamp() WHERE id = ANY(:ids)"),
        {"ids": event_ids},
    )


_DELIVERY = (
    "SELECT d.*, e.type AS event_type, s.url, s.tenant FROM app.webhook_deliveries d "
    "JOIN app.webhook_events e ON e.id = d.event_id JOIN app.webhook_subscriptions s ON s.id = d.subscription_id "
)


def _delivery(row: Any) -> Delivery:
    return Delivery(
        id=row.id,
        event_id=row.event_id,
        event_type=row.event_type,
        subscription_id=row.subscription_id,
        url=row.url,
        state=row.state,
        attempts=row.attempts,
        redeliveries=row.redeliveries,
        workflow_id=row.workflow_id,
        last_status=row.last_status,
        last_error=row.last_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        delivered_at=row.delivered_at,
    )


def get_delivery(
    conn: sa.Connection, delivery_id: str, tenant: str | None = None, *, lock: bool = False
) -> Delivery | None:
    scoped = "" if tenant is None else "AND s.tenant = :tenant "
    locking = "FOR UPDATE OF d" if lock else ""
    row = conn.execute(
        sql(f"{_DELIVERY}WHERE d.id = :id {scoped}{locking}"), {"id": delivery_id, "tenant": tenant}
    ).one_or_none()
    return None if row is None else _delivery(row)


def list_deliveries(
    conn: sa.Connection,
    *,
    tenant: str | None,
    state: str | None,
    subscription_id: str | None,
    limit: int,
    before: str | None = None,
) -> list[Delivery]:
    """Deliveries, newest first, filtered by tenant, state and subscription when given; ``before`` (a delivery
    id) starts after that delivery in this order (keyset pages)."""
    clauses = ["TRUE"]
    if tenant is not None:
        clauses.append("s.tenant = :tenant")
    if state is not None:
        clauses.append("d.state = :state")
    if subscription_id is not None:
        clauses.append("d.subscription_id = :subscription")
    if before is not None:
        clauses.append("(d.created_at, d.id) < (SELECT created_at, id FROM app.webhook_deliveries WHERE id = :before)")
    rows = conn.execute(
        sql(f"{_DELIVERY}WHERE {' AND '.join(clauses)} ORDER BY d.created_at DESC, d.id DESC LIMIT :n"),
        {"tenant": tenant, "state": state, "subscription": subscription_id, "n": limit, "before": before},
    )
    return [_delivery(row) for row in rows]


def record_attempt(
    conn: sa.Connection,
    delivery_id: str,
    *,
    round_number: int,
    attempt: int,
    status: int | None,
    error: str | None,
    state: str,
) -> None:
    """Ledger one HTTP attempt (once per round and attempt) and move the delivery to ``state``."""
    conn.execute(
        sql(
            "INSERT INTO app.webhook_attempts (delivery_id, round, attempt, status, error) "
            "VALUES (:id, :round, :attempt, :status, :error) ON CONFLICT DO NOTHING"
        ),
        {"id": delivery_id, "round": round_number, "attempt": attempt, "status": status, "error": error},
    )
    conn.execute(
        sql(
            "UPDATE app.webhook_deliveries SET state = :state, attempts = attempts + 1, last_status = :status, "
            "last_error = :error, updated_at = clock_timestamp(), "
            "delivered_at = CASE WHEN :state = 'delivered' THEN clock_timestamp() ELSE delivered_at END "
            "WHERE id = :id"
        ),
        {"id": delivery_id, "status": status, "error": error, "state": state},
    )


def attempts_of(conn: sa.Connection, delivery_id: str) -> list[Attempt]:
    rows = conn.execute(
        sql("SELECT * FROM app.webhook_attempts WHERE delivery_id = :id ORDER BY round, attempt"),
        {"id": delivery_id},
    )
    return [
        Attempt(delivery_id=r.delivery_id, round=r.round, attempt=r.attempt, status=r.status, error=r.error, at=r.at)
        for r in rows
    ]


def restart_delivery(conn: sa.Connection, delivery_id: str, workflow_id: str) -> None:
    """A redelivery by hand: a new round under a new workflow id, pending again."""
    conn.execute(
        sql(
            "UPDATE app.webhook_deliveries SET state = 'pending', redeliveries = redeliveries + 1, "
            "workflow_id = :wf, updated_at = clock_timestamp() WHERE id = :id"
        ),
        {"id": delivery_id, "wf": workflow_id},
    )


def sending_view(conn: sa.Connection, delivery_id: str) -> tuple[Delivery, Event, Subscription] | None:
    """What a delivery attempt needs: the delivery, its event and its subscription (with the sealed secret)."""
    delivery = get_delivery(conn, delivery_id)
    if delivery is None:
        return None
    event = get_event(conn, delivery.event_id)
    row = conn.execute(
        sql("SELECT * FROM app.webhook_subscriptions WHERE id = :id"), {"id": delivery.subscription_id}
    ).one()
    assert event is not None
    return delivery, event, _subscription(row)


def reseal_secrets(conn: sa.Connection, current: Callable[[str], str]) -> int:
    """Rewrite each stored signing secret to ``current(stored)`` where that differs (plaintext from before
    migration 0016 sealed, an older key's value resealed); returns how many changed. Without subscriptions it
    calls nothing (no key is needed, none is created)."""
    rows = conn.execute(sql("SELECT id, sealed_secret FROM app.webhook_subscriptions FOR UPDATE")).all()
    changed = 0
    for row in rows:
        value = current(row.sealed_secret)
        if value != row.sealed_secret:
            conn.execute(
                sql("UPDATE app.webhook_subscriptions SET sealed_secret = :sealed WHERE id = :id"),
                {"id": row.id, "sealed": value},
            )
            changed += 1
    return changed


# --- retention (kodo.workflows.webhook_retention) -------------------------------------------------------


def delete_finished_deliveries(conn: sa.Connection, older_than_days: int, limit: int) -> int:
    """Delete up to ``limit`` ``delivered``/``dead`` deliveries last changed more than ``older_than_days`` ago,
    with their attempts; returns how many. A ``pending`` delivery is never deleted, and one a redelivery has
    locked is skipped (``SKIP LOCKED``; the state is checked again on the locked row)."""
    deleted: int = conn.execute(
        sql(
            "WITH doomed AS (SELECT id FROM app.webhook_deliveries "
            "  WHERE state IN ('delivered', 'dead') AND updated_at < clock_timestamp() - make_interval(days => :days) "
            "  ORDER BY updated_at LIMIT :n FOR UPDATE SKIP LOCKED), "
            "tries AS (DELETE FROM app.webhook_attempts WHERE delivery_id IN (SELECT id FROM doomed)), "
            "gone AS (DELETE FROM app.webhook_deliveries WHERE id IN (SELECT id FROM doomed) "
            "  AND state IN ('delivered', 'dead') RETURNING 1) "
            "SELECT count(*) FROM gone"
        ),
        {"days": older_than_days, "n": limit},
    ).scalar_one()
    return deleted


def delete_spent_events(conn: sa.Connection, older_than_days: int, limit: int) -> int:
    """Delete up to ``limit`` events older than ``older_than_days`` that were fanned out and have no delivery
    left; returns how many. An event not yet dispatched, or with any delivery on record, is kept."""
    deleted: int = conn.execute(
        sql(
            "WITH doomed AS (SELECT e.seq FROM app.webhook_events e "
            "  WHERE e.dispatched_at IS NOT NULL AND e.created_at < clock_timestamp() - make_interval(days => :days) "
            "  AND NOT EXISTS (SELECT 1 FROM app.webhook_deliveries d WHERE d.event_id = e.id) "
            "  ORDER BY e.seq LIMIT :n FOR UPDATE SKIP LOCKED), "
            "gone AS (DELETE FROM app.webhook_events WHERE seq IN (SELECT seq FROM doomed) RETURNING 1) "
            "SELECT count(*) FROM gone"
        ),
        {"days": older_than_days, "n": limit},
    ).scalar_one()
    return deleted


def delete_stopped_subscriptions(conn: sa.Connection, older_than_days: int, limit: int) -> int:
    """Delete up to ``limit`` subscriptions stopped more than ``older_than_days`` ago with no delivery left."""
    deleted: int = conn.execute(
        sql(
            "WITH doomed AS (SELECT s.id FROM app.webhook_subscriptions s "
            "  WHERE s.deleted_at < clock_timestamp() - make_interval(days => :days) "
            "  AND NOT EXISTS (SELECT 1 FROM app.webhook_deliveries d WHERE d.subscription_id = s.id) "
            "  ORDER BY s.deleted_at LIMIT :n FOR UPDATE SKIP LOCKED), "
            "gone AS (DELETE FROM app.webhook_subscriptions WHERE id IN (SELECT id FROM doomed) RETURNING 1) "
            "SELECT count(*) FROM gone"
        ),
        {"days": older_than_days, "n": limit},
    ).scalar_one()
    return deleted
