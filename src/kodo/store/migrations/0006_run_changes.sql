-- Every change of a run row notifies `kodo_run_changed` with '<run id> <status> <workflow id>' (the workflow
-- id last: it is the one part that is not kodo's own token), delivered when the
-- changing transaction commits. The API's long-poll (`GET /api/runs/{wid}?until=…`) and the SSE stream
-- wake on it instead of re-reading on a timer (kodo.api.run_changes). Postgres folds identical
-- payloads of one transaction into one notification; an UPDATE that changes nothing sends none.
CREATE OR REPLACE FUNCTION app.notify_run_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kodo_run_changed', NEW.id || ' ' || NEW.status || ' ' || NEW.workflow_id);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS kodo_run_changed_insert ON app.runs;
CREATE TRIGGER kodo_run_changed_insert AFTER INSERT ON app.runs
FOR EACH ROW EXECUTE FUNCTION app.notify_run_changed();

DROP TRIGGER IF EXISTS kodo_run_changed_update ON app.runs;
CREATE TRIGGER kodo_run_changed_update AFTER UPDATE ON app.runs
FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION app.notify_run_changed();
