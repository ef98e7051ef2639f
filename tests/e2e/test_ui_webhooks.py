"""The ops console's dead webhook deliveries in a real browser (Debian chromium, headless): one is redelivered
by its button and reaches the receiver with the same webhook-id."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from helpers import wait_until
from processes import KodoProcess
from webhook_receiver import receiver

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (.ci/run installs it)"
)


@pytest.fixture
def page() -> Iterator[object]:
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        opened = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        opened.set_default_timeout(60_000)
        yield opened
        browser.close()


def test_a_dead_delivery_is_redelivered_from_the_ops_console(page: object, spawn: Callable[..., KodoProcess]) -> None:
    """One try, refused (500): dead, listed in /ops; its Redeliver button sends it again and it is delivered."""
    kodo = spawn("up", KODO_WEBHOOK_MAX_ATTEMPTS="1")
    base = f"http://127.0.0.1:{kodo.port}"  # type: ignore[attr-defined]
    with receiver(failures=1) as hook:
        created = httpx.post(f"{base}/api/webhooks", json={"url": hook.url, "events": ["gate.opened"]})
        assert created.status_code == 201, created.text
        intent = httpx.post(f"{base}/api/intents", json={"goal": "hooked", "inputs": {}, "constraints": {}}).json()
        started = httpx.post(f"{base}/api/runs", json={"intentId": intent["intentId"], "queuePartitionKey": "ui"})
        assert started.status_code == 201, started.text

        def dead() -> list[dict[str, object]]:
            return list(httpx.get(f"{base}/api/webhooks/deliveries", params={"state": "dead"}).json())

        (delivery,) = wait_until(dead, timeout=60, what="a dead delivery")
        page.goto(f"{base}/ops")  # type: ignore[attr-defined]
        row = page.locator("tr", has_text=str(delivery["id"]))  # type: ignore[attr-defined]
        playwright.expect(row).to_contain_text("HTTP 500")
        with page.expect_navigation():  # type: ignore[attr-defined]  # the console reloads itself after a 202
            row.get_by_role("button", name="Redeliver").click()
            playwright.expect(page.locator("#toast")).to_contain_text("Redelivery queued")  # type: ignore[attr-defined]
        wait_until(lambda: hook.successes(), timeout=60, what="the redelivery answered 2xx")
        assert hook.successes() == {str(delivery["eventId"]): 1}
        assert {r.headers["webhook-id"] for r in hook.requests} == {delivery["eventId"]}
        done = httpx.get(f"{base}/api/webhooks/deliveries/{delivery['id']}").json()
        wait_until(
            lambda: httpx.get(f"{base}/api/webhooks/deliveries/{delivery['id']}").json()["state"] == "delivered",
            timeout=60,
            what="the delivery ledgered as delivered",
        )
        assert done["redeliveries"] == 1
        page.goto(f"{base}/ops")  # type: ignore[attr-defined]
        playwright.expect(page.get_by_text("No dead delivery.")).to_be_visible()  # type: ignore[attr-defined]
