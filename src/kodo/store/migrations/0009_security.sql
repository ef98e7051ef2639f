-- Issue 19 (secure by default): who made each human decision.
-- The reply ledger records its actor: the token's subject, or "local" (+ the name a body claims) without tokens.
ALTER TABLE app.human_interactions ADD COLUMN actor text;

-- Decisions are append-only, enforced by Postgres itself: the reply ledger and the plan approvals refuse
-- UPDATE and DELETE (a later decision is a new row; kodo never rewrites one).
CREATE FUNCTION app.refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'app.% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER human_interactions_append_only BEFORE UPDATE OR DELETE ON app.human_interactions
    FOR EACH ROW EXECUTE FUNCTION app.refuse_rewrite();
CREATE TRIGGER plan_approvals_append_only BEFORE UPDATE OR DELETE ON app.plan_approvals
    FOR EACH ROW EXECUTE FUNCTION app.refuse_rewrite();
