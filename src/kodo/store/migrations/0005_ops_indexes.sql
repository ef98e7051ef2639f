-- The ops plane finds a run by its current phase workflow (ops lists, diagnosis, batch selection).
CREATE INDEX IF NOT EXISTS runs_phase_idx ON app.runs ((coalesce(current_workflow_id, workflow_id)));
CREATE INDEX IF NOT EXISTS runs_current_workflow_idx ON app.runs (current_workflow_id);
