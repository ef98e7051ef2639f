-- Issue 22: a run's workspace and what leaves it.
-- app.workspaces: the source repository a run's workspace was cloned from and the commit it was cloned at
-- (the base every review diff and every delivery is computed against); one row per run, written once.
CREATE TABLE IF NOT EXISTS app.workspaces (
    run_id       text PRIMARY KEY,
    source_repo  text,
    base_commit  text CHECK (base_commit IS NULL OR base_commit ~ '^[0-9a-f]{40,64}$'),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- app.deliveries: the delivery ledger, one row per run (exactly once). ``pending`` is written before any
-- git work; a retried delivery finds the row (and the branch it may already have made) and never commits
-- twice. ``branch`` mode makes refs/heads/kodo/<runId> in the source; ``patch`` mode a format-patch artifact.
CREATE TABLE IF NOT EXISTS app.deliveries (
    run_id        text PRIMARY KEY,
    mode          text NOT NULL CHECK (mode IN ('branch', 'patch')),
    status        text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    source_repo   text NOT NULL,
    branch        text NOT NULL,
    base_commit   text NOT NULL,
    tree          text NOT NULL,
    commit_sha    text,
    artifact_uri  text,
    error         jsonb,
    requested_by  text NOT NULL DEFAULT 'workflow',
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at  timestamptz
);
