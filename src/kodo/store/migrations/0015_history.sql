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
