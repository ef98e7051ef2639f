"""Webhooks: subscriptions, events written with their state change, signed durable delivery with retries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from helpers import make_settings, table_counts, wait_status, wait_until
from kodo.cli import cli as root
from kodo.settings import Settings
from webhook_receiver import receiver

TERMINAL = {"SUCCESS", "ERROR", "CANCELLED"}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "home",
        KODO_WEBHOOK_MAX_ATTEMPTS="3",
        KODO_WEBHOOK_BACKOFF_SEC="0.05",
        KODO_WEBHOOK_TIMEOUT_SEC="0.5",
    )


def subscribe(client: TestClient, url: str, events: list[str]) -> dict[str, Any]:
    response = client.post("/api/webhooks", json={"url": url, "events": events})
    assert response.status_code == 201, response.text
    return dict(response.json())


def start(client: TestClient, goal: str, **fields: Any) -> str:
    intent = client.post("/api/intents", json={"goal": goal, "inputs": {}, "constraints": {}}).json()
    response = client.post("/api/runs", json={"intentId": intent["intentId"], "queuePartitionKey": "hooks", **fields})
    assert response.status_code == 201, response.text
    return str(intent["intentId"])


def deliveries(client: TestClient, **query: str) -> list[dict[str, Any]]:
    response = client.get("/api/webhooks/deliveries", params=query)
    assert response.status_code == 200, response.text
    return list(response.json())


def approve(client: TestClient, wid: str) -> None:
    response = client.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "tester"})
    assert response.status_code in {200, 202}, response.text


def test_gate_opened_reaches_a_loopback_receiver_signed(client: TestClient, engine: sa.Engine) -> None:
    """A run parking at its plan gate sends gate.opened, signed so that the standardwebhooks library verifies it."""
    with receiver() as hook:
        sub = subscribe(client, hook.url, ["gate.opened", "run.succeeded"])
        assert sub["secret"].startswith("whsec_") and "secret" not in client.get("/api/webhooks").json()[0]
        wid = start(client, "hooked run")
        wait_status(client, wid, {"WAITING_INPUT"})
        got = wait_until(lambda: hook.of_type("gate.opened", sub["secret"]), what="gate.opened delivered")
        request, payload = got[0]
        wait_until(lambda: deliveries(client, state="delivered"), what="delivery ledgered")
        assert payload["data"]["workflowId"] == wid and payload["data"]["purpose"] == "approve-plan"
        assert payload["data"]["nextAction"] == "APPROVE_PLAN" and payload["data"]["queuePartitionKey"] == "hooks"
        with engine.connect() as conn:
            event_id, latency = conn.execute(
                sa.text(
                    "SELECT e.id, extract(epoch FROM d.delivered_at - e.created_at) FROM app.webhook_events e "
                    "JOIN app.webhook_deliveries d ON d.event_id = e.id WHERE e.type = 'gate.opened'"
                )
            ).one()
        assert request.headers["webhook-id"] == event_id
        print(f"gate.opened: park → delivered in {float(latency):.3f} s")
        approve(client, wid)
        assert wait_status(client, wid, TERMINAL)["status"] == "SUCCESS"
        done = wait_until(lambda: hook.of_type("run.succeeded", sub["secret"]), what="run.succeeded delivered")
        assert done[0][1]["data"]["status"] == "succeeded"
        assert hook.of_type("gate.resolved", sub["secret"]) == []  # not subscribed


def test_a_receiver_failing_twice_gets_three_tries_with_one_id(client: TestClient) -> None:
    """500, 500, then 2xx: three requests, one webhook-id, the delivery delivered after 3 attempts."""
    with receiver(failures=2) as hook:
        sub = subscribe(client, hook.url, ["run.failed"])
        wid = start(client, "please fail me", autoApprove=True)
        wait_status(client, wid, TERMINAL)
        wait_until(lambda: [d for d in deliveries(client) if d["state"] == "delivered"], what="delivered")
        ids = {r.headers["webhook-id"] for r in hook.requests}
        assert len(hook.requests) == 3 and len(ids) == 1
        assert [r.status for r in hook.requests] == [500, 500, 204]
        assert hook.of_type("run.failed", sub["secret"])[0][1]["data"]["error"]["code"] == "CMD_NONZERO"
        (delivery,) = deliveries(client)
        tries = client.get(f"/api/webhooks/deliveries/{delivery['id']}").json()["tries"]
        assert [t["status"] for t in tries] == [500, 500, 204] and delivery["attempts"] == 3


def test_a_receiver_that_never_answers_goes_dead_and_the_run_is_unaffected(client: TestClient) -> None:
    """Every try times out: dead after the bounded tries, shown in the ops console; the run still reaches SUCCESS."""
    with receiver(hang=3.0) as hook:
        subscribe(client, hook.url, ["gate.opened"])
        wid = start(client, "slow receiver")
        wait_status(client, wid, {"WAITING_INPUT"})
        approve(client, wid)
        assert wait_status(client, wid, TERMINAL)["status"] == "SUCCESS"
        dead = wait_until(lambda: deliveries(client, state="dead"), what="dead delivery")
        assert dead[0]["attempts"] == 3 and "Timeout" in dead[0]["lastError"]
        assert len(hook.requests) <= 3
        internal = {"hideInternal": "true", "name": "DeliverWebhook"}
        assert client.get("/api/ops/wf", params=internal).json() == []  # a utility: hidden on request
        assert len(client.get("/api/ops/wf", params={"name": "DeliverWebhook"}).json()) == 1
        console = client.get("/ops")  # the ops console lists it, with how to send it again
        assert console.status_code == 200 and dead[0]["id"] in console.text and "redeliver" in console.text


def test_a_dead_delivery_is_redelivered_by_hand(client: TestClient) -> None:
    """A delivery that ran out of tries is sent again by POST …/redeliver, with the same webhook-id."""
    with receiver(failures=3) as hook:
        sub = subscribe(client, hook.url, ["run.succeeded"])
        wid = start(client, "redeliver me", autoApprove=True)
        assert wait_status(client, wid, TERMINAL)["status"] == "SUCCESS"
        (dead,) = wait_until(lambda: deliveries(client, state="dead"), what="dead delivery")
        again = client.post(f"/api/webhooks/deliveries/{dead['id']}/redeliver")
        assert again.status_code == 202, again.text
        wait_until(lambda: deliveries(client, state="delivered"), what="redelivered")
        assert hook.successes() == {dead["eventId"]: 1} and len(hook.requests) == 4
        assert hook.of_type("run.succeeded", sub["secret"])
        assert client.post(f"/api/webhooks/deliveries/{dead['id']}/redeliver").status_code == 202
        assert client.post("/api/webhooks/deliveries/whd_nope/redeliver").status_code == 404


def test_refused_subscriptions_are_400_and_write_nothing(client: TestClient, engine: sa.Engine) -> None:
    """A private or public address, a bad scheme, credentials, an unknown event or field: 400, zero rows."""
    with engine.connect() as conn:
        before = table_counts(conn)
    bad = [
        {"url": "http://10.0.0.5/hook", "events": ["gate.opened"]},
        {"url": "http://192.168.1.10:8080/hook", "events": ["gate.opened"]},
        {"url": "http://example.com/hook", "events": ["gate.opened"]},
        {"url": "ftp://127.0.0.1/hook", "events": ["gate.opened"]},
        {"url": "http://user:pw@127.0.0.1/hook", "events": ["gate.opened"]},
        {"url": "http://127.0.0.1:99999/hook", "events": ["gate.opened"]},
        {"url": "http://127.0.0.1/hook", "events": ["gate.exploded"]},
        {"url": "http://127.0.0.1/hook", "events": []},
        {"url": "http://127.0.0.1/hook", "events": ["gate.opened"], "extra": 1},
    ]
    for body in bad:
        response = client.post("/api/webhooks", json=body)
        assert response.status_code == 400, (body, response.text)
        assert "error" in response.json()
    assert client.get("/api/webhooks/deliveries", params={"state": "lost"}).status_code == 400
    assert client.delete("/api/webhooks/whs_nope").status_code == 404
    with engine.connect() as conn:
        assert table_counts(conn) == before
        assert conn.execute(sa.text("SELECT count(*) FROM app.webhook_subscriptions")).scalar_one() == 0


def undispatched(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.text("SELECT count(*) FROM app.webhook_events WHERE dispatched_at IS NULL")).scalar_one()
        )


def test_a_deleted_subscription_hears_nothing(client: TestClient, engine: sa.Engine) -> None:
    """After DELETE a subscription is gone from the list, gets no deliveries, and no outbox rows are written."""
    with receiver() as hook:
        sub = subscribe(client, hook.url, ["run.succeeded"])
        assert client.delete(f"/api/webhooks/{sub['id']}").status_code == 200
        assert client.get("/api/webhooks").json() == []
        wid = start(client, "nobody listens", autoApprove=True)
        assert wait_status(client, wid, TERMINAL)["status"] == "SUCCESS"
        wait_until(lambda: undispatched(engine) == 0, what="events dispatched")
        assert deliveries(client) == [] and hook.requests == []
        with engine.connect() as conn:  # nobody listens: the triggers write no outbox row at all
            assert conn.execute(sa.text("SELECT count(*) FROM app.webhook_events")).scalar_one() == 0


def cli(settings: Settings, *args: str) -> Result:
    env = {
        "DATABASE_URL": str(settings.database_url),
        "KODO_HOME": str(settings.home),
        "KODO_SCHEDULED_TICK_CRON": "off",
    }
    return CliRunner().invoke(root, list(args), env=env, catch_exceptions=False)


def test_cli_subscribes_and_a_batch_cancel_sends_run_canceled_and_batch_done(
    client: TestClient, engine: sa.Engine, settings: Settings
) -> None:
    """kodo webhooks add/list/deliveries/remove; kodo ops cancel by filter sends run.canceled and ops.batch_done."""
    with receiver() as hook:
        refused = cli(settings, "webhooks", "add", "http://10.1.2.3/hook", "--event", "run.canceled")
        assert refused.exit_code == 1 and "not allowed" in refused.output
        added = cli(settings, "webhooks", "add", hook.url, "--event", "run.canceled", "--event", "ops.batch_done")
        assert added.exit_code == 0, added.output
        sub = json.loads(added.output)
        assert sub["id"] in cli(settings, "webhooks", "list").output
        wid = start(client, "cancel me by batch")
        wait_status(client, wid, {"WAITING_INPUT"})
        batch = [
            "ops",
            "cancel",
            "--partition",
            "hooks",
            "--run-status",
            "waiting_input",
            "--actor",
            "me",
            "--reason",
            "r",
        ]
        assert cli(settings, *batch).exit_code == 0
        (canceled,) = wait_until(lambda: hook.of_type("run.canceled", sub["secret"]), what="run.canceled")
        (done,) = wait_until(lambda: hook.of_type("ops.batch_done", sub["secret"]), what="ops.batch_done")
        assert canceled[1]["data"]["workflowId"] == wid
        assert done[1]["data"] | {"failedWorkflowIds": []} == {
            "action": "cancel",
            "actor": "me",
            "reason": "r",
            "total": 1,
            "ok": 1,
            "failed": 0,
            "failedWorkflowIds": [],
        }

        # The receiver answers before the worker records the delivery as delivered: wait for the ledger.
        def delivered() -> set[str]:
            listed = cli(settings, "webhooks", "deliveries", "--state", "delivered", "--json")
            assert listed.exit_code == 0, listed.output
            types = {str(row["eventType"]) for row in json.loads(listed.output)}
            return types if types == {"run.canceled", "ops.batch_done"} else set()

        assert wait_until(delivered, what="both deliveries ledgered") == {"run.canceled", "ops.batch_done"}
        assert cli(settings, "webhooks", "remove", sub["id"]).exit_code == 0
        assert cli(settings, "webhooks", "remove", sub["id"]).exit_code == 1


def test_a_rejected_plan_sends_opened_resolved_and_failed(client: TestClient) -> None:
    """A "no" to the plan: gate.opened, gate.resolved (decision no), run.failed (PLAN_REJECTED), in that order."""
    events = ["gate.opened", "gate.resolved", "gate.timed_out", "run.succeeded", "run.failed", "run.canceled"]
    with receiver() as hook:
        secret = subscribe(client, hook.url, events)["secret"]
        wid = start(client, "rejected plan")
        opened = wait_until(lambda: hook.of_type("gate.opened", secret), what="gate.opened")
        gate = opened[0][1]["data"]["gateKey"]
        reply = {"payload": {"choice": "no"}, "dedupeKey": "no-1", "origin": "manual"}
        assert client.post(f"/api/runs/{wid}/gates/{gate}/reply", json=reply).status_code == 200
        assert wait_status(client, wid, TERMINAL)["status"] == "ERROR"

        def received() -> list[dict[str, Any]]:
            payloads = [payload for kind in events for _request, payload in hook.of_type(kind, secret)]
            return sorted(payloads, key=lambda payload: str(payload["timestamp"])) if len(payloads) >= 3 else []

        got = wait_until(received, what="three events")
        assert [payload["type"] for payload in got] == ["gate.opened", "gate.resolved", "run.failed"]
        assert got[1]["data"]["decision"] == "no" and got[1]["data"]["state"] == "RECEIVED"
        assert got[2]["data"]["error"]["code"] == "PLAN_REJECTED"


def test_a_deleted_subscription_stops_its_pending_deliveries(client: TestClient) -> None:
    """A delivery of a subscription deleted since its event goes dead without sending another request."""
    with receiver(failures=3) as hook:
        sub = subscribe(client, hook.url, ["run.succeeded"])
        wid = start(client, "then unsubscribe", autoApprove=True)
        assert wait_status(client, wid, TERMINAL)["status"] == "SUCCESS"
        (dead,) = wait_until(lambda: deliveries(client, state="dead"), what="dead delivery")
        assert client.delete(f"/api/webhooks/{sub['id']}").status_code == 200
        assert client.post(f"/api/webhooks/deliveries/{dead['id']}/redeliver").status_code == 202
        again = wait_until(
            lambda: [d for d in deliveries(client, state="dead") if d["attempts"] == 4], what="dead again"
        )
        assert again[0]["lastError"] == "subscription deleted" and len(hook.requests) == 3
