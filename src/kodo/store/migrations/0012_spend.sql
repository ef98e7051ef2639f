-- Spend budgets (issue #23): usage on every agent call, reservations, tenant spend limits.

-- The agent-call ledger carries each call's usage. cost_usd is what the call was charged (0 for a replayed
-- or recorded call: it costs nothing); priced_usd is what it cost, or would have cost, at the price table.
ALTER TABLE app.opencode_calls
    ADD COLUMN model         text,
    ADD COLUMN tenant_id     text,
    ADD COLUMN input_tokens  bigint NOT NULL DEFAULT 0,
    ADD COLUMN output_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN cached_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN cost_usd      numeric(18, 8) NOT NULL DEFAULT 0,
    ADD COLUMN priced_usd    numeric(18, 8) NOT NULL DEFAULT 0;
CREATE INDEX opencode_calls_tenant_time_idx ON app.opencode_calls (tenant_id, created_at) WHERE cost_usd > 0;

-- One row per agent call made against a budget: its maximum held before the call ('reserved'), its actual
-- usage after it ('settled'), or let go when the call never happened ('released'). Rows, not counters: two
-- concurrent reservations of one run serialise on the run row, of one tenant on its tenant_budgets row.
CREATE TABLE app.spend_reservations (
    id          text PRIMARY KEY,
    op_key      text NOT NULL UNIQUE,
    run_id      text NOT NULL REFERENCES app.runs (id),
    tenant_id   text,
    step_id     text NOT NULL,
    model       text NOT NULL,
    tokens      bigint NOT NULL CHECK (tokens >= 0),
    cost_usd    numeric(18, 8) NOT NULL CHECK (cost_usd >= 0),
    state       text NOT NULL DEFAULT 'reserved' CHECK (state IN ('reserved', 'settled', 'released')),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    closed_at   timestamptz
);
CREATE INDEX spend_reservations_open_idx ON app.spend_reservations (run_id) WHERE state = 'reserved';
CREATE INDEX spend_reservations_tenant_open_idx ON app.spend_reservations (tenant_id) WHERE state = 'reserved';

-- A tenant's spend limits in USD, per UTC day and per UTC month (NULL: no limit). Changes are audited
-- (app.artifacts step OPS, anchored at 'tenant:<id>').
CREATE TABLE app.tenant_budgets (
    tenant_id   text PRIMARY KEY,
    daily_usd   numeric(18, 8) CHECK (daily_usd IS NULL OR daily_usd > 0),
    monthly_usd numeric(18, 8) CHECK (monthly_usd IS NULL OR monthly_usd > 0),
    updated_by  text,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- A run parked at a budget gate waits for APPROVE_BUDGET (a top-up, or no).
ALTER TABLE app.runs DROP CONSTRAINT runs_next_action_check;
ALTER TABLE app.runs ADD CONSTRAINT runs_next_action_check
    CHECK (next_action IN ('APPROVE_PLAN', 'ANSWER_QUESTION', 'APPROVE_BUDGET', 'REPAIR', 'NONE'));
