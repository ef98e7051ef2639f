"""Webhook delivery: a dispatcher fans each outbox event out to its subscriptions, one ``DeliverWebhook``
workflow per delivery sends it, signed per Standard Webhooks, with retries and exponential backoff.

* The outbox row is written with the state change (``0013_webhooks.sql``), so an event exists iff its
  change committed. The :class:`Dispatcher` (a thread in every worker, woken by ``NOTIFY
  kodo_webhook_event`` and at least every second) claims undispatched events (``SKIP LOCKED``), writes one
  delivery row per matching subscription and enqueues its workflow on ``webhookQ`` **in the same
  transaction**, then marks the event dispatched. A crash before that commit leaves the event to the next
  round; after it, DBOS owns the delivery.
* ``DeliverWebhook`` (id ``webhook:<delivery id>``) tries up to ``KODO_WEBHOOK_MAX_ATTEMPTS`` times: each
  try is a DBOS step (one POST with bounded timeouts, ``webhook-id`` = the event id, the idempotency key),
  then a datasource transaction ledgers it; between tries a durable sleep doubles from
  ``KODO_WEBHOOK_BACKOFF_SEC``. After the last failed try the delivery is ``dead``; :func:`redeliver` sends
  it again under a new workflow id. A crash between a receiver's answer and the step's checkpoint repeats
  that POST with the same ``webhook-id``: at least once, never a new id.
* Delivery never runs on a run's path: the run only wrote one row; slow receivers hold ``webhookQ`` slots.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import threading
from datetime import UTC, datetime
from typing import Any, TypedDict
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
import structlog
from dbos import DBOS, DBOSClient, EnqueueOptions
from standardwebhooks.webhooks import Webhook

from kodo import faults, sealing
from kodo.errors import ConfigurationError, Conflict, InvalidInput, NotFound
from kodo.settings import Settings
from kodo.store import webhooks
from kodo.store.notifications import Listener
from kodo.workflows.runtime import services, transact

log = structlog.get_logger("kodo")

DELIVER_WORKFLOW = "DeliverWebhook"
QUEUE = "webhookQ"
WORKFLOW_PREFIX = "webhook:"
MAX_BACKOFF_SEC = 300.0
DISPATCH_BATCH = 100
POLL_SEC = 1.0
ERROR_TEXT_MAX = 500


class SendOutcome(TypedDict):
    ok: bool
    final: bool  # no point trying again (the target is no longer allowed)
    status: int | None
    error: str | None


# --- targets --------------------------------------------------------------------------------------


def allowed_hosts(settings: Settings) -> set[str]:
    return {host.strip().lower().strip("[]") for host in settings.webhook_allowed_hosts.split(",") if host.strip()}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_target(url: str, settings: Settings) -> str:
    """The URL if kodo may send to it: http(s), no credentials, a loopback host or one of
    ``KODO_WEBHOOK_ALLOWED_HOSTS``; else :class:`InvalidInput` (a server that runs commands must not be a
    way to reach arbitrary internal addresses)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        _ = parts.port
    except ValueError as error:
        raise InvalidInput(f"invalid webhook url: {error}") from error
    if parts.scheme not in {"http", "https"} or not host:
        raise InvalidInput("invalid webhook url: an absolute http:// or https:// URL is required")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("invalid webhook url: credentials in the URL are not accepted")
    if not _is_loopback(host) and host not in allowed_hosts(settings):
        raise InvalidInput(
            f"webhook url host {host} is not allowed: only loopback and the hosts in KODO_WEBHOOK_ALLOWED_HOSTS"
        )
    return url


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of 32 random bytes."""
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def new_subscription_id() -> str:
    return "whs_" + secrets.token_hex(12)


def subscribe(
    conn: sa.Connection,
    settings: Settings,
    *,
    tenant: str,
    partitions: list[str] | None,
    url: str,
    events: list[str],
    description: str | None,
    created_by: str | None,
) -> tuple[webhooks.Subscription, str]:
    """Store a subscription with a new signing secret, sealed (``kodo.sealing``); returns it and the secret
    in the clear, to be shown once to its creator and never again."""
    secret = new_secret()
    created = webhooks.create_subscription(
        conn,
        subscription_id=new_subscription_id(),
        tenant=tenant,
        partitions=partitions,
        url=check_target(url, settings),
        events=sorted(set(events)),
        sealed_secret=sealing.seal(settings, secret),
        description=description,
        created_by=created_by,
    )
    return created, secret


# --- the message ------------------------------------------------------------------------------------


def message_body(event: webhooks.Event) -> str:
    """The JSON body of an event (identical on every attempt): ``{type, timestamp, data}``."""
    payload = {"type": event.type, "timestamp": event.created_at.astimezone(UTC).isoformat(), "data": event.data}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)


def signed_headers(secret: str, message_id: str, body: str, at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with the ``standardwebhooks`` library."""
    signature = Webhook(secret).sign(message_id, at, body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": "kodo-webhooks",
    }


# --- the delivery workflow ------------------------------------------------------------------------------


@DBOS.step(name="webhookSend")
def send(delivery_id: str) -> SendOutcome:
    """One POST of the delivery's event to its subscription, with bounded timeouts; never raises."""
    svc = services()
    with svc.engine.connect() as conn:
        found = webhooks.sending_view(conn, delivery_id)
    if found is None:
        return {"ok": False, "final": True, "status": None, "error": "delivery not found"}
    _delivery, event, subscription = found
    if subscription.deleted_at is not None:  # removed after the event: its pending deliveries stop here
        return {"ok": False, "final": True, "status": None, "error": "subscription deleted"}
    try:
        check_target(subscription.url, svc.settings)
    except InvalidInput as error:
        return {"ok": False, "final": True, "status": None, "error": error.message}
    try:
        secret = sealing.unseal(svc.settings, subscription.sealed_secret)
    except ConfigurationError as error:  # fail closed: never send unsigned or with a guessed key
        log.error("webhook secret cannot be unsealed", delivery=delivery_id, error=error.message)
        return {"ok": False, "final": True, "status": None, "error": error.message[:ERROR_TEXT_MAX]}
    body = message_body(event)
    headers = signed_headers(secret, event.id, body, datetime.now(UTC))
    try:
        with httpx.Client(timeout=svc.settings.webhook_timeout_sec, follow_redirects=False) as http:
            response = http.post(subscription.url, content=body.encode("utf-8"), headers=headers)
    except httpx.HTTPError as error:
        return {
            "ok": False,
            "final": False,
            "status": None,
            "error": f"{type(error).__name__}: {error}"[:ERROR_TEXT_MAX],
        }
    faults.hit("webhooks.after_send")
    ok = 200 <= response.status_code < 300
    error_text = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
    return {"ok": ok, "final": False, "status": response.status_code, "error": error_text}


def _ledger(
    conn: sa.Connection, delivery_id: str, round_number: int, attempt: int, outcome: SendOutcome, state: str
) -> None:
    webhooks.record_attempt(
        conn,
        delivery_id,
        round_number=round_number,
        attempt=attempt,
        status=outcome["status"],
        error=outcome["error"],
        state=state,
    )


def backoff(settings: Settings, attempt: int) -> float:
    """The wait after failed try ``attempt`` (1-based): base · 2^(attempt-1), capped."""
    return float(min(settings.webhook_backoff_sec * 2 ** (attempt - 1), MAX_BACKOFF_SEC))


@DBOS.workflow(name=DELIVER_WORKFLOW, max_recovery_attempts=10)
def deliver_webhook(delivery_id: str, round_number: int) -> dict[str, Any]:
    """Send one delivery until it succeeds or its tries run out (then it is ``dead``)."""
    settings = services().settings
    limit = settings.webhook_max_attempts
    for attempt in range(1, limit + 1):
        outcome = send(delivery_id)
        if outcome["ok"]:
            state = "delivered"
        elif outcome["final"] or attempt == limit:
            state = "dead"
        else:
            state = "pending"
        transact("webhook.attempt", _ledger, delivery_id, round_number, attempt, outcome, state)
        if state != "pending":
            return {"deliveryId": delivery_id, "state": state, "attempts": attempt}
        DBOS.sleep(backoff(settings, attempt))
    raise AssertionError("unreachable: the last attempt is delivered or dead")


def _enqueue(conn: sa.Connection, client: DBOSClient, settings: Settings, workflow_id: str, *args: Any) -> None:
    options: EnqueueOptions = {
        "workflow_name": DELIVER_WORKFLOW,
        "queue_name": QUEUE,
        "workflow_id": workflow_id,
        "priority": 1,
        "app_version": settings.app_version,
    }
    client.enqueue_in_transaction(conn, options, *args)


# --- dispatch -------------------------------------------------------------------------------------------


def dispatch_once(engine: sa.Engine, client: DBOSClient, settings: Settings, limit: int = DISPATCH_BATCH) -> int:
    """Fan out up to ``limit`` undispatched events: deliveries + their workflows, one transaction. Returns
    the number of deliveries started."""
    started = 0
    with engine.begin() as conn:
        events = webhooks.claim_undispatched(conn, limit)
        if not events:
            return 0
        faults.hit("webhooks.dispatch")
        for event in events:
            for subscription in webhooks.subscribers(conn, event):
                delivery_id = webhooks.add_delivery(conn, event.id, subscription.id, WORKFLOW_PREFIX)
                if delivery_id is not None:
                    _enqueue(conn, client, settings, WORKFLOW_PREFIX + delivery_id, delivery_id, 0)
                    started += 1
        webhooks.mark_dispatched(conn, [event.id for event in events])
    return started


class Dispatcher:
    """The worker's dispatch thread: woken by ``NOTIFY kodo_webhook_event``, and every second regardless."""

    def __init__(self, engine: sa.Engine, client: DBOSClient, settings: Settings, url: str) -> None:
        self.engine = engine
        self.client = client
        self.settings = settings
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listener = Listener(
            url,
            webhooks.CHANNEL,
            deliver=lambda _payload: self._wake.set(),
            lost=self._wake.set,
            application_name="kodo-webhooks",
        )

    def start(self) -> Dispatcher:
        self.listener.start()
        self._thread = threading.Thread(target=self._loop, name="kodo-webhooks", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.listener.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(POLL_SEC)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                while dispatch_once(self.engine, self.client, self.settings) > 0 and not self._stop.is_set():
                    pass
            except Exception as error:  # the next round tries again; nothing was committed
                log.warning("webhook dispatch failed", error=repr(error))


# --- by hand --------------------------------------------------------------------------------------------


def redeliver(conn: sa.Connection, client: DBOSClient, settings: Settings, delivery_id: str, tenant: str | None) -> str:
    """Send a ``dead`` (or already delivered) delivery again, as a new round under a new workflow id, in the
    caller's transaction; returns that workflow id. 404: no such delivery (for this tenant); 409: pending."""
    delivery = webhooks.get_delivery(conn, delivery_id, tenant, lock=True)
    if delivery is None:
        raise NotFound(f"webhook delivery not found: {delivery_id}")
    if delivery.state == "pending":
        raise Conflict(f"webhook delivery {delivery_id} is still pending", state=delivery.state)
    round_number = delivery.redeliveries + 1
    workflow_id = f"{WORKFLOW_PREFIX}{delivery_id}:r{round_number}"
    webhooks.restart_delivery(conn, delivery_id, workflow_id)
    _enqueue(conn, client, settings, workflow_id, delivery_id, round_number)
    return workflow_id
