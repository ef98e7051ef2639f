-- Issue 19 (secure by default): who made each human decision.
-- The reply ledger records its actor: the token's subject, or "local" (+ the name a body claims) without tokens.
ALTER TABLE app.human_interactions ADD COLUMN actor text;
