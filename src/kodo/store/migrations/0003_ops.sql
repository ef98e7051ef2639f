-- The ops plane: live workers and their heartbeats (dead-executor recovery reads them).
CREATE TABLE app.executors (
    executor_id   text PRIMARY KEY,              -- DBOS executor id (DBOS__VMID or Settings.executor_for(role))
    role          text NOT NULL,                 -- monolith | worker
    app_version   text NOT NULL,                 -- the DBOS application version it dequeues
    hostname      text NOT NULL,
    pid           integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    stopped_at    timestamptz,                   -- set on a clean stop; a kill -9 leaves it NULL
    leader_since  timestamptz                    -- set while it holds the recovery leader lock
);
CREATE INDEX executors_heartbeat_idx ON app.executors (heartbeat_at DESC);

-- OPS audit artifacts are read by anchor, newest first.
CREATE INDEX artifacts_ops_idx ON app.artifacts (run_id, created_at DESC) WHERE step_id = 'OPS';
