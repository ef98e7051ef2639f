-- Operators (and the predecessor's runbooks) ask by the workflow id the console shows, but
-- app.mock_receipts and app.artifacts (with the OPS audit rows) are keyed by kodo's `run_…` id.
-- Both tables get `workflow_id` beside `run_id`: the run's workflow id, or the anchor itself when the
-- row belongs to no app run (an OPS audit row of a bare DBOS workflow). A BEFORE INSERT trigger fills
-- it, so every writer (store.artifacts, store.receipts, store.ops_audit) stays one INSERT.
CREATE OR REPLACE FUNCTION app.fill_workflow_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.workflow_id IS NULL THEN
        NEW.workflow_id := coalesce((SELECT r.workflow_id FROM app.runs r WHERE r.id = NEW.run_id), NEW.run_id);
    END IF;
    RETURN NEW;
END
$$;

ALTER TABLE app.mock_receipts ADD COLUMN IF NOT EXISTS workflow_id text;
UPDATE app.mock_receipts m SET workflow_id = r.workflow_id FROM app.runs r WHERE r.id = m.run_id AND m.workflow_id IS NULL;
UPDATE app.mock_receipts SET workflow_id = run_id WHERE workflow_id IS NULL;
ALTER TABLE app.mock_receipts ALTER COLUMN workflow_id SET NOT NULL;
CREATE INDEX IF NOT EXISTS mock_receipts_workflow_idx ON app.mock_receipts (workflow_id);
DROP TRIGGER IF EXISTS kodo_mock_receipts_workflow_id ON app.mock_receipts;
CREATE TRIGGER kodo_mock_receipts_workflow_id BEFORE INSERT ON app.mock_receipts
FOR EACH ROW EXECUTE FUNCTION app.fill_workflow_id();

ALTER TABLE app.artifacts ADD COLUMN IF NOT EXISTS workflow_id text;
UPDATE app.artifacts a SET workflow_id = r.workflow_id FROM app.runs r WHERE r.id = a.run_id AND a.workflow_id IS NULL;
UPDATE app.artifacts SET workflow_id = run_id WHERE workflow_id IS NULL;
ALTER TABLE app.artifacts ALTER COLUMN workflow_id SET NOT NULL;
CREATE INDEX IF NOT EXISTS artifacts_workflow_idx ON app.artifacts (workflow_id, step_id);
DROP TRIGGER IF EXISTS kodo_artifacts_workflow_id ON app.artifacts;
CREATE TRIGGER kodo_artifacts_workflow_id BEFORE INSERT ON app.artifacts
FOR EACH ROW EXECUTE FUNCTION app.fill_workflow_id();
