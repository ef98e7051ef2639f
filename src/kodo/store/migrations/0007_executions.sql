-- The execution ledger (issue #18): one row per sandbox execution of a fan-out task, committed *before*
-- the command starts, and completed (finished | reused) in the same transaction as the DBOS checkpoint of
-- the step that records the result. A row left `started` by a process that died is marked `interrupted`
-- (interrupted_by, interrupted_at) by whoever finds it: the restarted executor at start-up, or the task's
-- next execution before it runs. `idempotency_key` is the same for every execution of one (task, attempt):
-- the sandbox keeps the completed result under it, so a re-execution returns it (`reused`, `reused_from`
-- names the execution that produced it) instead of running the command again.
CREATE TABLE IF NOT EXISTS app.sbx_executions (
    execution_id     text PRIMARY KEY,
    run_id           text NOT NULL REFERENCES app.runs (id),
    task_key         text NOT NULL,
    attempt          integer NOT NULL,
    idempotency_key  text NOT NULL,
    provider         text NOT NULL,
    executor_id      text NOT NULL,
    pid              integer NOT NULL,
    status           text NOT NULL CHECK (status IN ('started', 'finished', 'interrupted', 'reused')),
    started_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at      timestamptz,
    exit             integer,
    err_code         text,
    reused_from      text,
    interrupted_by   text,
    interrupted_at   timestamptz
);
CREATE INDEX IF NOT EXISTS sbx_executions_run_idx ON app.sbx_executions (run_id, started_at, execution_id);
CREATE INDEX IF NOT EXISTS sbx_executions_key_idx ON app.sbx_executions (idempotency_key);
CREATE INDEX IF NOT EXISTS sbx_executions_started_idx ON app.sbx_executions (executor_id) WHERE status = 'started';

-- The mock sandbox's own idempotency store: the result of an execution, written by the sandbox when the
-- command ends (in its own transaction, as a real provider's disk would be), read back on a re-execution.
CREATE TABLE IF NOT EXISTS app.mock_sandbox_results (
    idempotency_key  text PRIMARY KEY,
    execution_id     text NOT NULL,
    result           jsonb NOT NULL,
    finished_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
