-- Stranded work (issue #26): a workflow DBOS lists as PENDING for a live executor that has no thread
-- running it in that process (its thread died, e.g. in a Postgres outage). Each worker's watchdog keeps
-- the rows of its own executor: a row appears when a workflow is first seen stranded, gets `recovered_at`
-- when the watchdog (or the recovery leader, for an executor that does not) re-enqueues it, and is deleted
-- once the workflow is no longer stranded. The diagnosis view reads it ("stranded since T, recovering").
CREATE TABLE IF NOT EXISTS app.stranded_workflows (
    workflow_id text PRIMARY KEY,
    executor_id text NOT NULL,
    since timestamptz NOT NULL DEFAULT clock_timestamp(),
    seen_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    recovered_at timestamptz,
    recovered_by text
);
CREATE INDEX IF NOT EXISTS stranded_workflows_executor ON app.stranded_workflows (executor_id);
