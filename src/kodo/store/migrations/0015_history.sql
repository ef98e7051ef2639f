-- Flat as history grows (issue #25): what the hot reads need when app.runs holds 100,000 finished runs and
-- 10,000 parked ones.

-- Queue depth without counting the waiting workflows one by one: per (queue, status), counts kept by a
-- trigger on dbos.workflow_status (installed after DBOS's migrations: kodo.store.queue_counts), one row per
-- Postgres backend that changed them, so that concurrent transactions never update the same row.
CREATE TABLE IF NOT EXISTS app.queue_counts (
    queue_name     text   NOT NULL,
    status         text   NOT NULL,
    backend        int    NOT NULL,
    workflow_count bigint NOT NULL,
    PRIMARY KEY (queue_name, status, backend)
);

-- Runs that are not finished, by status: selecting runs by a live status (`kodo ops … --run-status
-- waiting_input`, the inbox's waiting runs) reads those runs, not the whole history (a sequential scan of
-- 110,000 runs: 92 ms of the 127 ms batch selection at 100,000 finished and 10,000 parked runs). Partial:
-- finished runs, the bulk of the table, are not in it.
CREATE INDEX IF NOT EXISTS runs_live_status_idx ON app.runs (status)
    WHERE status IN ('queued', 'running', 'waiting_input', 'repairing');
