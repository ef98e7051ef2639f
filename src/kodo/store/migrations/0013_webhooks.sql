-- Webhooks (kodo.store.webhooks, kodo.workflows.webhooks): subscriptions, an outbox of events and one
-- delivery per (event, subscription).
--
-- The outbox: an event row is written by a trigger in the same transaction as the state change that causes
-- it (a run becoming terminal, a human gate opening or being resolved), so an event exists if and only if
-- its change committed, whichever code path made the change. Events with no row change behind them
-- (ops.batch_done, budget.exceeded) are written by kodo.store.webhooks.record_event in the caller's
-- transaction. Each insert notifies `kodo_webhook_event`, a hint for the dispatcher to fan out now.

CREATE TABLE app.webhook_subscriptions (
    id          text PRIMARY KEY,
    tenant      text NOT NULL,                 -- the creating token's tenant ('*' without tokens)
    partitions  text[],                        -- LIKE patterns of the partitions it hears about; NULL: all
    url         text NOT NULL,
    events      text[] NOT NULL,
    secret      text NOT NULL,                 -- whsec_<base64>: the Standard Webhooks signing key
    description text,
    created_by  text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    deleted_at  timestamptz
);

CREATE TABLE app.webhook_events (
    seq           bigserial PRIMARY KEY,
    id            text NOT NULL UNIQUE DEFAULT ('msg_' || replace(gen_random_uuid()::text, '-', '')),
    type          text NOT NULL,
    run_id        text,
    partition_key text,
    data          jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    dispatched_at timestamptz
);
CREATE INDEX webhook_events_pending_idx ON app.webhook_events (seq) WHERE dispatched_at IS NULL;

CREATE TABLE app.webhook_deliveries (
    id              text PRIMARY KEY DEFAULT ('whd_' || replace(gen_random_uuid()::text, '-', '')),
    event_id        text NOT NULL REFERENCES app.webhook_events (id),
    subscription_id text NOT NULL REFERENCES app.webhook_subscriptions (id),
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    redeliveries    integer NOT NULL DEFAULT 0,
    workflow_id     text NOT NULL,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at    timestamptz,
    UNIQUE (event_id, subscription_id)
);
CREATE INDEX webhook_deliveries_state_idx ON app.webhook_deliveries (state, created_at DESC);

-- One row per HTTP attempt: what the receiver answered, so "three deliveries with the same id" is SQL.
CREATE TABLE app.webhook_attempts (
    delivery_id text NOT NULL REFERENCES app.webhook_deliveries (id),
    round       integer NOT NULL,              -- 0 for the first delivery, +1 per redelivery by hand
    attempt     integer NOT NULL,
    status      integer,
    error       text,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (delivery_id, round, attempt)
);

CREATE OR REPLACE FUNCTION app.notify_webhook_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kodo_webhook_event', NEW.id);
    RETURN NULL;
END
$$;

CREATE TRIGGER kodo_webhook_event_insert AFTER INSERT ON app.webhook_events
FOR EACH ROW EXECUTE FUNCTION app.notify_webhook_event();

-- Whether any live subscription listens for an event type: with none, the triggers write nothing, so a
-- kodo without webhooks pays one lookup in a tiny table per run or gate change, not an outbox row.
CREATE OR REPLACE FUNCTION app.webhook_heard(kind text) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM app.webhook_subscriptions WHERE deleted_at IS NULL AND kind = ANY(events))
$$;

-- run.succeeded | run.failed | run.canceled: a run row entering a terminal status.
CREATE OR REPLACE FUNCTION app.webhook_run_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text;
BEGIN
    kind := CASE NEW.status
        WHEN 'succeeded' THEN 'run.succeeded'
        WHEN 'canceled' THEN 'run.canceled'
        ELSE 'run.failed' END;
    IF NOT app.webhook_heard(kind) THEN
        RETURN NULL;
    END IF;
    INSERT INTO app.webhook_events (type, run_id, partition_key, data)
    VALUES (kind, NEW.id, NEW.queue_partition_key, jsonb_build_object(
        'runId', NEW.id,
        'workflowId', NEW.workflow_id,
        'status', NEW.status,
        'nextAction', NEW.next_action,
        'error', NEW.error,
        'retryCount', NEW.retry_count,
        'queuePartitionKey', NEW.queue_partition_key,
        'recipeId', NEW.recipe_id));
    RETURN NULL;
END
$$;

CREATE TRIGGER kodo_webhook_run_insert AFTER INSERT ON app.runs
FOR EACH ROW WHEN (NEW.status IN ('succeeded', 'failed', 'canceled', 'retries_exceeded'))
EXECUTE FUNCTION app.webhook_run_event();

CREATE TRIGGER kodo_webhook_run_update AFTER UPDATE OF status ON app.runs
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                   AND NEW.status IN ('succeeded', 'failed', 'canceled', 'retries_exceeded'))
EXECUTE FUNCTION app.webhook_run_event();

-- gate.opened | gate.resolved | gate.timed_out: a human gate (one with a prompt; an autoApprove gate has
-- none and is not announced) opening, or being resolved.
CREATE OR REPLACE FUNCTION app.webhook_gate_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text;
    run  app.runs%ROWTYPE;
BEGIN
    IF TG_OP = 'INSERT' THEN
        kind := 'gate.opened';
    ELSIF NEW.result ->> 'state' = 'TIMED_OUT' THEN
        kind := 'gate.timed_out';
    ELSE
        kind := 'gate.resolved';
    END IF;
    IF NOT app.webhook_heard(kind) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO run FROM app.runs WHERE id = NEW.run_id;
    INSERT INTO app.webhook_events (type, run_id, partition_key, data)
    VALUES (kind, NEW.run_id, run.queue_partition_key, jsonb_build_object(
        'runId', NEW.run_id,
        'workflowId', run.workflow_id,
        'gateKey', NEW.gate_key,
        'purpose', NEW.purpose,
        'nextAction', NEW.next_action,
        'deadlineAt', NEW.deadline_at,
        'decision', NEW.decision -> 'decision',
        'state', NEW.result ->> 'state',
        'queuePartitionKey', run.queue_partition_key));
    RETURN NULL;
END
$$;

CREATE TRIGGER kodo_webhook_gate_insert AFTER INSERT ON app.human_gates
FOR EACH ROW WHEN (NEW.prompt IS NOT NULL AND NEW.resolved_at IS NULL)
EXECUTE FUNCTION app.webhook_gate_event();

CREATE TRIGGER kodo_webhook_gate_update AFTER UPDATE OF resolved_at ON app.human_gates
FOR EACH ROW WHEN (OLD.resolved_at IS NULL AND NEW.resolved_at IS NOT NULL AND NEW.prompt IS NOT NULL)
EXECUTE FUNCTION app.webhook_gate_event();
