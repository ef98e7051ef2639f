"""Webhooks with real processes: kill -9 of a ``kodo up`` between a state change and its delivery still
delivers exactly one successful event per subscription (a repeat only ever carries the same id), and the
split topology (worker + API shim) delivers and redelivers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import sqlalchemy as sa

from helpers import oracle_violations, wait_until
from processes import KodoProcess
from webhook_receiver import receiver


def _subscribe(base: str, url: str) -> dict[str, Any]:
    response = httpx.post(f"{base}/api/webhooks", json={"url": url, "events": ["gate.opened"]})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _park_a_run(base: str) -> str:
    intent = httpx.post(f"{base}/api/intents", json={"goal": "hooked", "inputs": {}, "constraints": {}}).json()
    started = httpx.post(f"{base}/api/runs", json={"intentId": intent["intentId"], "queuePartitionKey": "hooks"})
    assert started.status_code == 201, started.text
    return str(intent["intentId"])


def test_kill_9_before_the_dispatch_commits_still_delivers_once_per_subscription(
    spawn: Callable[..., KodoProcess], engine: sa.Engine
) -> None:
    """The worker dies fanning gate.opened out; after a restart each of two subscriptions gets it once."""
    up = spawn("up", KODO_FAULT_POINTS="webhooks.dispatch:kill")
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    with receiver() as first, receiver() as second:
        subscriptions = [_subscribe(base, first.url), _subscribe(base, second.url)]
        wid = _park_a_run(base)
        up.wait_killed(60)
        with engine.connect() as conn:
            pending = conn.execute(
                sa.text("SELECT id FROM app.webhook_events WHERE type = 'gate.opened' AND dispatched_at IS NULL")
            ).scalars()
            event_ids = list(pending)
            assert len(event_ids) == 1  # the event committed with the park; its fan-out did not
            assert conn.execute(sa.text("SELECT count(*) FROM app.webhook_deliveries")).scalar_one() == 0
        up.restart_unarmed()
        for hook, subscription in zip((first, second), subscriptions, strict=True):
            got = wait_until(lambda h=hook, s=subscription: h.of_type("gate.opened", s["secret"]), what="delivered")
            assert got[0][1]["data"]["workflowId"] == wid
        wait_until(lambda: first.successes() and second.successes(), what="both answered")
        assert first.successes() == {event_ids[0]: 1} and second.successes() == {event_ids[0]: 1}
        with engine.connect() as conn:
            assert oracle_violations(conn) == {}


def test_kill_9_after_the_receiver_answered_repeats_with_the_same_id(
    spawn: Callable[..., KodoProcess], engine: sa.Engine
) -> None:
    """The worker dies after a 2xx, before the attempt's checkpoint: the recovered delivery sends the same id."""
    up = spawn("up", KODO_FAULT_POINTS="webhooks.after_send:kill")
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    with receiver() as hook:
        subscription = _subscribe(base, hook.url)
        _park_a_run(base)
        up.wait_killed(60)
        assert len(hook.requests) == 1
        up.restart_unarmed()

        def delivered() -> bool:
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT state FROM app.webhook_deliveries")).scalar_one() == "delivered"

        wait_until(delivered, what="delivered after recovery")
        ids = {request.headers["webhook-id"] for request in hook.requests}
        assert len(hook.requests) == 2 and len(ids) == 1  # a repeat, never a new message
        assert len(hook.of_type("gate.opened", subscription["secret"])) == 2
        with engine.connect() as conn:
            attempts = conn.execute(sa.text("SELECT count(*) FROM app.webhook_attempts")).scalar_one()
        assert attempts == 1  # the ledger holds the one checkpointed attempt


def test_split_topology_delivers_and_the_shim_redelivers(spawn: Callable[..., KodoProcess]) -> None:
    """kodo worker + kodo api: the worker delivers gate.opened; a dead delivery redelivered through the shim
    (which never launches DBOS) is sent by the worker."""
    spawn("worker", KODO_WEBHOOK_MAX_ATTEMPTS="1")
    shim = spawn("api", KODO_WEBHOOK_MAX_ATTEMPTS="1")
    base = f"http://127.0.0.1:{shim.port}"  # type: ignore[attr-defined]
    with receiver(failures=1) as hook:
        subscription = _subscribe(base, hook.url)
        _park_a_run(base)

        def dead() -> list[Any]:
            return list(httpx.get(f"{base}/api/webhooks/deliveries", params={"state": "dead"}).json())

        (delivery,) = wait_until(dead, what="one failed try, then dead")
        assert httpx.post(f"{base}/api/webhooks/deliveries/{delivery['id']}/redeliver").status_code == 202
        wait_until(lambda: hook.successes(), what="redelivered by the worker")
        assert hook.successes() == {delivery["eventId"]: 1}
        assert len(hook.of_type("gate.opened", subscription["secret"])) == 2
