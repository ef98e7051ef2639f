-- Human gates as first-class rows: a parked run holds no workflow, only this row and a delayed resume.
ALTER TABLE app.runs ADD COLUMN current_workflow_id text;

ALTER TABLE app.human_gates
    ADD COLUMN step_id            text NOT NULL DEFAULT '',
    ADD COLUMN generation         integer NOT NULL DEFAULT 1,
    ADD COLUMN next_action        text,
    ADD COLUMN prompt             jsonb,
    ADD COLUMN deadline_at        timestamptz,
    ADD COLUMN resume_workflow_id text,
    ADD COLUMN result             jsonb,
    ADD COLUMN decision           jsonb,
    ADD COLUMN resolved_at        timestamptz;
CREATE INDEX human_gates_open_idx ON app.human_gates (deadline_at) WHERE resolved_at IS NULL;

-- Repair workflows, one per retry, so a second retry really runs.
CREATE TABLE app.repairs (
    run_id       text NOT NULL REFERENCES app.runs (id),
    attempt      integer NOT NULL,
    workflow_id  text NOT NULL UNIQUE,
    from_step    text NOT NULL,
    requested_by text,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, attempt)
);
