-- kodo's application schema. DBOS owns schema "dbos" in the same database.
CREATE SCHEMA IF NOT EXISTS app;

CREATE TABLE app.intents (
    id           text PRIMARY KEY,
    goal         text NOT NULL,
    payload      jsonb NOT NULL,               -- {inputs, constraints, connectors}
    intent_hash  text,
    recipe_id    text,
    recipe_v     text,
    recipe_hash  text,
    json         jsonb,                        -- canonical intent (recipe intents)
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX intents_intent_hash_uq ON app.intents (intent_hash) WHERE intent_hash IS NOT NULL;

CREATE TABLE app.runs (
    id                   text PRIMARY KEY,
    intent_id            text NOT NULL REFERENCES app.intents (id),
    workflow_id          text NOT NULL UNIQUE,
    status               text NOT NULL CHECK (status IN ('queued','running','waiting_input','succeeded',
                                                         'failed','canceled','retries_exceeded','repairing')),
    trace_id             text,
    last_step            text,
    error                jsonb,                -- {code, message}
    retry_count          integer NOT NULL DEFAULT 0,
    next_action          text CHECK (next_action IN ('APPROVE_PLAN','ANSWER_QUESTION','REPAIR','NONE')),
    tenant_id            text,
    queue_partition_key  text,
    intent_hash          text,
    recipe_id            text,
    recipe_v             text,
    recipe_hash          text,
    budget               jsonb,
    options              jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX runs_intent_id_idx ON app.runs (intent_id);
CREATE INDEX runs_intent_hash_idx ON app.runs (intent_hash);
CREATE INDEX runs_created_at_idx ON app.runs (created_at DESC);

CREATE TABLE app.run_steps (
    run_id       text NOT NULL REFERENCES app.runs (id),
    step_id      text NOT NULL,
    attempt      integer NOT NULL DEFAULT 1,
    phase        text NOT NULL,
    output       jsonb NOT NULL,
    trace_id     text,
    span_id      text,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    PRIMARY KEY (run_id, step_id, attempt)
);

CREATE TABLE app.artifacts (
    run_id      text NOT NULL,
    step_id     text NOT NULL,
    task_key    text NOT NULL DEFAULT '',
    idx         integer NOT NULL,
    attempt     integer NOT NULL DEFAULT 1,
    kind        text NOT NULL,
    uri         text NOT NULL,
    inline      jsonb,
    sha256      text NOT NULL CHECK (sha256 ~ '^[a-f0-9]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, step_id, task_key, idx, attempt)
);
CREATE INDEX artifacts_uri_idx ON app.artifacts (uri);
CREATE INDEX artifacts_step_idx ON app.artifacts (step_id, created_at DESC);

CREATE TABLE app.recipes (
    id                   text PRIMARY KEY,
    name                 text NOT NULL,
    version              integer NOT NULL CHECK (version > 0),
    queue_name           text NOT NULL CHECK (queue_name IN ('compileQ','sbxQ','controlQ','intentQ')),
    max_concurrency      integer NOT NULL CHECK (max_concurrency > 0),
    max_steps            integer NOT NULL CHECK (max_steps > 0),
    max_sandbox_minutes  integer NOT NULL CHECK (max_sandbox_minutes > 0),
    spec                 jsonb NOT NULL DEFAULT '{}'::jsonb,
    active_v             text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, version)
);
INSERT INTO app.recipes (id, name, version, queue_name, max_concurrency, max_steps, max_sandbox_minutes) VALUES
    ('rcp_compile_default_v1', 'compile-default', 1, 'intentQ', 10, 32, 15),
    ('rcp_sandbox_default_v1', 'sandbox-default', 1, 'intentQ', 20, 128, 60),
    ('rcp_control_default_v1', 'control-default', 1, 'intentQ', 5, 16, 10);

CREATE TABLE app.opencode_calls (
    id            text PRIMARY KEY,
    op_key        text NOT NULL UNIQUE,
    run_id        text NOT NULL REFERENCES app.runs (id),
    step_id       text NOT NULL,
    attempt       integer NOT NULL DEFAULT 1,
    agent         text NOT NULL,
    mode          text NOT NULL,
    session_id    text,
    schema_hash   text NOT NULL,
    prompt        text NOT NULL,
    request       jsonb NOT NULL,
    response      jsonb,
    structured    jsonb,
    error         text,
    duration_ms   integer,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX opencode_calls_run_step_idx ON app.opencode_calls (run_id, step_id, created_at DESC);

CREATE TABLE app.mock_receipts (
    receipt_key       text PRIMARY KEY,
    run_id            text NOT NULL REFERENCES app.runs (id),
    step_id           text NOT NULL,
    payload_hash      text NOT NULL,
    first_attempt     integer NOT NULL CHECK (first_attempt > 0),
    last_attempt      integer NOT NULL CHECK (last_attempt > 0),
    seen_count        integer NOT NULL DEFAULT 1 CHECK (seen_count > 0),
    request_payload   jsonb,
    response_payload  jsonb,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX mock_receipts_run_step_idx ON app.mock_receipts (run_id, step_id);

CREATE TABLE app.plan_approvals (
    run_id       text PRIMARY KEY REFERENCES app.runs (id),
    approved_at  timestamptz NOT NULL DEFAULT now(),
    approved_by  text NOT NULL DEFAULT 'system',
    notes        text
);

CREATE TABLE app.sbx_runs (
    run_id      text NOT NULL REFERENCES app.runs (id),
    step_id     text NOT NULL,
    task_key    text NOT NULL,
    attempt     integer NOT NULL DEFAULT 1,
    provider    text NOT NULL,
    request     jsonb NOT NULL,
    response    jsonb NOT NULL,
    err_code    text NOT NULL,
    metrics     jsonb,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, step_id, task_key, attempt)
);
CREATE INDEX sbx_runs_task_key_idx ON app.sbx_runs (task_key);

CREATE TABLE app.human_gates (
    run_id      text NOT NULL REFERENCES app.runs (id),
    gate_key    text NOT NULL,
    topic       text NOT NULL,
    purpose     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, gate_key)
);

CREATE TABLE app.human_interactions (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_id   text NOT NULL,
    run_id        text NOT NULL REFERENCES app.runs (id),
    gate_key      text NOT NULL,
    topic         text NOT NULL,
    dedupe_key    text NOT NULL,
    payload_hash  text NOT NULL CHECK (payload_hash ~ '^[a-f0-9]{64}$'),
    payload       jsonb NOT NULL,
    origin        text NOT NULL CHECK (origin IN ('manual','engine-dbos','api-shim','webhook','webhook-ci',
                                                  'external','unknown','legacy-approve','legacy-event','auto')),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (workflow_id, gate_key, topic, dedupe_key)
);
CREATE INDEX human_interactions_gate_idx ON app.human_interactions (gate_key);

CREATE TABLE app.patch_history (
    run_id             text NOT NULL REFERENCES app.runs (id),
    step_id            text NOT NULL,
    patch_index        integer NOT NULL,
    target_path        text NOT NULL,
    preimage_hash      text NOT NULL,
    postimage_hash     text NOT NULL,
    diff_hash          text NOT NULL,
    preimage_content   text NOT NULL,
    postimage_content  text NOT NULL,
    applied_at         timestamptz,
    rolled_back_at     timestamptz,
    created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, step_id, patch_index)
);

-- Crash-demo and slow-step side-effect markers: the exactly-once proof of the runbooks.
CREATE TABLE app.marks (
    run_id      text NOT NULL,
    step        text NOT NULL CHECK (step IN ('s1', 's2')),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, step)
);
