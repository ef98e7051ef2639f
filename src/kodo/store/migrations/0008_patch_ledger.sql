-- Write-ahead patch ledger (issue #18): the exact preimage of every patched file (bytes, mode, whether it
-- existed) is committed before the file is touched, so a rollback restores it byte for byte and deletes a
-- file the run created. The text columns of 0001 stay as a readable rendering for old rows and the UI.
ALTER TABLE app.patch_history
    ADD COLUMN preimage_bytes   bytea,
    ADD COLUMN postimage_bytes  bytea,
    ADD COLUMN preimage_mode    integer,
    ADD COLUMN preimage_existed boolean NOT NULL DEFAULT true;

-- A row with neither applied_at nor rolled_back_at is "pending": its preimage is recorded and its file may
-- or may not hold the postimage (a crash between the write and the step's commit). Recovery looks them up.
CREATE INDEX patch_history_pending_idx ON app.patch_history (run_id)
    WHERE applied_at IS NULL AND rolled_back_at IS NULL;

-- Atomic ops (issue #18): cancel and resume change dbos.workflow_status, app.runs and the OPS audit row in
-- one transaction. A fork cannot (DBOS copies its checkpoints in a transaction of its own), so it is
-- written ahead as an intent naming the forked workflow's id; the audit row is written when that workflow
-- exists (by the operation, or by the reconciler after a crash), never before.
CREATE TABLE app.ops_intents (
    forked_workflow_id  text PRIMARY KEY,
    op                  text NOT NULL CHECK (op IN ('fork')),
    anchor              text NOT NULL,
    target_workflow_id  text NOT NULL,
    payload             jsonb NOT NULL,
    state               text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'abandoned')),
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at         timestamptz
);
CREATE INDEX ops_intents_pending_idx ON app.ops_intents (created_at) WHERE state = 'pending';
