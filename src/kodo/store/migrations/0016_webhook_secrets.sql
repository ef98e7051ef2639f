-- Webhook signing secrets at rest (kodo.sealing): the column holds `fernet:<token>`, the secret encrypted
-- with kodo's key (KODO_SECRET_KEY or $KODO_HOME/secret.key), never the secret itself.
--
-- SQL cannot encrypt with a key only kodo holds, so rows written before this migration are sealed by
-- kodo.main.prepare_database right after migrating (kodo.store.webhooks.reseal_secrets), before the
-- process serves. The constraint is NOT VALID: it holds for every row written or updated from now on
-- (a plaintext secret can no longer be inserted), without failing this migration on the old rows.

ALTER TABLE app.webhook_subscriptions RENAME COLUMN secret TO sealed_secret;

ALTER TABLE app.webhook_subscriptions
    ADD CONSTRAINT webhook_subscriptions_secret_sealed CHECK (sealed_secret LIKE 'fernet:%') NOT VALID;
