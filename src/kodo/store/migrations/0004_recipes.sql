-- Recipes: an append-only version registry (draft → candidate → stable; stable is immutable),
-- their fixtures, the active-version pointer, eval results and the sandbox template registry.

CREATE TABLE app.recipe_versions (
    id           text NOT NULL,
    v            text NOT NULL,
    hash         text NOT NULL CHECK (hash ~ '^[a-f0-9]{64}$'),   -- sha256(canonical(spec))
    status       text NOT NULL CHECK (status IN ('draft','candidate','stable')),
    json         jsonb NOT NULL,                                 -- the RecipeSpec as imported
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    promoted_at  timestamptz,
    PRIMARY KEY (id, v),
    UNIQUE (id, hash)
);

-- Append-only: content never changes, rows are never deleted, status only moves forward one step.
CREATE FUNCTION app.recipe_versions_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'recipe versions are append-only: % @ % cannot be deleted', OLD.id, OLD.v;
    END IF;
    IF NEW.id <> OLD.id OR NEW.v <> OLD.v OR NEW.hash <> OLD.hash OR NEW.json <> OLD.json
       OR NEW.created_at <> OLD.created_at THEN
        RAISE EXCEPTION 'recipe version %@% is immutable', OLD.id, OLD.v;
    END IF;
    IF NEW.status <> OLD.status AND NOT (
        (OLD.status = 'draft' AND NEW.status = 'candidate') OR
        (OLD.status = 'candidate' AND NEW.status = 'stable')) THEN
        RAISE EXCEPTION 'recipe version %@%: illegal status change % -> %', OLD.id, OLD.v, OLD.status, NEW.status;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER recipe_versions_guard BEFORE UPDATE OR DELETE ON app.recipe_versions
    FOR EACH ROW EXECUTE FUNCTION app.recipe_versions_guard();

CREATE TABLE app.recipe_fixtures (
    recipe_id   text NOT NULL,
    v           text NOT NULL,
    fixture_id  text NOT NULL,
    json        jsonb NOT NULL,                                  -- {id, formData}
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (recipe_id, v, fixture_id),
    FOREIGN KEY (recipe_id, v) REFERENCES app.recipe_versions (id, v)
);

-- The only mutable recipe state: which stable version a recipe id currently points at.
CREATE TABLE app.recipe_active (
    recipe_id   text PRIMARY KEY,
    v           text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (recipe_id, v) REFERENCES app.recipe_versions (id, v)
);

-- Eval checks of a recipe run, written once with the run's ExecuteST checkpoint.
CREATE TABLE app.eval_results (
    run_id      text NOT NULL REFERENCES app.runs (id),
    check_id    text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('file_exists','jsonschema','rowcount_gte','regex','diff_le')),
    pass        boolean NOT NULL,
    reason      text NOT NULL,
    payload     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, check_id)
);

-- Sandbox templates: one immutable row per (recipe version, dependency set).
CREATE TABLE app.sbx_templates (
    recipe_id     text NOT NULL,
    recipe_v      text NOT NULL,
    deps_hash     text NOT NULL CHECK (deps_hash ~ '^[a-f0-9]{64}$'),
    template_key  text NOT NULL UNIQUE,                          -- <recipe_id>:<recipe_v>:<deps_hash>
    template_id   text NOT NULL,                                 -- the provider's template / image id
    build_meta    jsonb NOT NULL DEFAULT '{}'::jsonb,            -- {bootMs, envRef, deps, registeredBy}
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (recipe_id, recipe_v, deps_hash),
    FOREIGN KEY (recipe_id, recipe_v) REFERENCES app.recipe_versions (id, v)
);
