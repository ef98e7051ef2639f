-- The optional "merge?" gate (kodo.workflows.merge_gate): a run whose recipe asks for it waits for APPROVE_MERGE
-- between its tests and its delivery.
ALTER TABLE app.runs DROP CONSTRAINT runs_next_action_check;
ALTER TABLE app.runs ADD CONSTRAINT runs_next_action_check
    CHECK (next_action IN ('APPROVE_PLAN', 'ANSWER_QUESTION', 'APPROVE_BUDGET', 'APPROVE_MERGE', 'REPAIR', 'NONE'));
