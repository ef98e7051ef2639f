"""Webhook signing secrets at rest: sealed in Postgres, unsealed only to sign, fail closed under another key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from pydantic import SecretStr

from helpers import make_settings, wait_until
from kodo import sealing
from kodo.main import prepare_database
from kodo.settings import Settings
from kodo.store import webhooks as store
from webhook_receiver import receiver


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url, tmp_path / "home", KODO_WEBHOOK_MAX_ATTEMPTS="2", KODO_WEBHOOK_BACKOFF_SEC="0.05"
    )


def batch_done(engine: sa.Engine, total: int) -> str:
    """An ops.batch_done event, written the way kodo.ops.batch writes it."""
    with engine.begin() as conn:
        return store.record_event(conn, "ops.batch_done", {"action": "cancel", "total": total})


def whole_rows(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT s::text FROM app.webhook_subscriptions s")).scalars())


def test_the_secret_is_sealed_at_rest_and_still_signs(
    client: TestClient, engine: sa.Engine, settings: Settings
) -> None:
    """No column of the row holds the secret; GET never answers it; a delivery verifies with the library."""
    with receiver() as hook:
        created = client.post("/api/webhooks", json={"url": hook.url, "events": ["ops.batch_done"]})
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        (row,) = whole_rows(engine)
        assert secret not in row and secret.removeprefix("whsec_") not in row and "fernet:" in row
        assert all("secret" not in s for s in client.get("/api/webhooks").json())
        event_id = batch_done(engine, 3)
        ((request, payload),) = wait_until(lambda: hook.of_type("ops.batch_done", secret), what="batch_done sent")
        assert request.headers["webhook-id"] == event_id and payload["data"]["total"] == 3
        assert stat_mode(sealing.key_path(settings)) == 0o600


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_another_key_makes_the_delivery_dead_without_sending(
    client: TestClient, engine: sa.Engine, settings: Settings
) -> None:
    """The key file replaced by another key: the delivery is dead at once with a clear error, nothing is sent."""
    with receiver() as hook:
        created = client.post("/api/webhooks", json={"url": hook.url, "events": ["ops.batch_done"]})
        assert created.status_code == 201, created.text
        key_file = sealing.key_path(settings)
        key_file.unlink()
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(descriptor, Fernet.generate_key())
        os.close(descriptor)
        batch_done(engine, 1)

        def dead() -> list[dict[str, object]]:
            return list(client.get("/api/webhooks/deliveries?state=dead").json())

        (delivery,) = wait_until(dead, what="dead delivery")
        assert delivery["attempts"] == 1 and "cannot be decrypted with this kodo's key" in str(delivery["lastError"])
        assert hook.requests == []


def test_secrets_stored_before_sealing_are_sealed_when_kodo_starts(settings: Settings, engine: sa.Engine) -> None:
    """A plaintext secret written before migration 0016 is sealed by the next start and unseals to itself."""
    prepare_database(settings)[1].dispose()
    legacy = "whsec_" + "A" * 44
    with engine.begin() as conn:  # the table as a pre-0016 kodo left it: no check, the secret in the clear
        conn.execute(
            sa.text("ALTER TABLE app.webhook_subscriptions DROP CONSTRAINT webhook_subscriptions_secret_sealed")
        )
        conn.execute(
            sa.text(
                "INSERT INTO app.webhook_subscriptions (id, tenant, url, events, sealed_secret) "
                "VALUES ('whs_old', '*', 'http://127.0.0.1:9/h', ARRAY['run.failed'], :secret)"
            ),
            {"secret": legacy},
        )
        conn.execute(
            sa.text(
                "ALTER TABLE app.webhook_subscriptions ADD CONSTRAINT webhook_subscriptions_secret_sealed "
                "CHECK (sealed_secret LIKE 'fernet:%') NOT VALID"
            )
        )
    prepare_database(settings)[1].dispose()
    (row,) = whole_rows(engine)
    assert legacy not in row and legacy.removeprefix("whsec_") not in row
    with engine.connect() as conn:
        sealed = store.get_subscription(conn, "whs_old", None)
    assert sealed is not None and sealing.unseal(settings, sealed.sealed_secret) == legacy
    with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):  # a plaintext secret is refused from now on
        conn.execute(sa.text("UPDATE app.webhook_subscriptions SET sealed_secret = 'whsec_x' WHERE id = 'whs_old'"))


def test_a_start_with_a_new_key_first_reseals_every_secret(settings: Settings, engine: sa.Engine) -> None:
    """KODO_SECRET_KEY=new,old at start-up moves stored secrets under the new key; the old key can then go."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = settings.model_copy(update={"secret_key": SecretStr(old)})
    prepare_database(before)[1].dispose()
    with engine.begin() as conn:
        store.create_subscription(
            conn,
            subscription_id="whs_rotate",
            tenant="*",
            partitions=None,
            url="http://127.0.0.1:9/h",
            events=["run.failed"],
            sealed_secret=sealing.seal(before, "whsec_rotated"),
            description=None,
            created_by=None,
        )
    prepare_database(settings.model_copy(update={"secret_key": SecretStr(f"{new},{old}")}))[1].dispose()
    with engine.connect() as conn:
        found = store.get_subscription(conn, "whs_rotate", None)
    assert found is not None
    assert (
        sealing.unseal(settings.model_copy(update={"secret_key": SecretStr(new)}), found.sealed_secret)
        == "whsec_rotated"
    )
