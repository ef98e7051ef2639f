"""Recipes: instantiation (form data → intent), import/export/promotion, and the canonical start.

``POST /api/run {recipeRef:{id,v}, formData, opts}``:

1. the pinned version must exist (404) and be ``stable`` unless ``opts.allowDraft`` (409);
2. form defaults fill missing top-level keys, then ``formData`` must satisfy the version's
   ``formSchema`` (400);
3. ``intentTmpl`` is rendered: a string that is exactly ``{{formData.x}}`` becomes the value itself, an
   embedded one is interpolated as text; an unknown key is a 400 ``missing template key``;
4. the result must be a valid intent (400); its id is ``ih_<sha256(canonical(intent))>``;
5. queue policy and budgets with the version's caps (400 ``queue_policy_violation``);
6. only then the intent row (insert-or-compare) and the run row + enqueue, in the caller's transaction,
   so every refusal above writes nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

import sqlalchemy as sa
from dbos import DBOSClient

from kodo.errors import Conflict, IdentityDrift, InvalidInput, NotFound
from kodo.identity import canonical, recipe_intent_id, sha256_hex
from kodo.models import Intent, Run
from kodo.settings import Settings
from kodo.store import intents
from kodo.store import recipe_versions as versions
from kodo.store.recipe_versions import RecipeVersion
from kodo.workflows import limits, repositories, schema_check
from kodo.workflows.queue_policy import QueueCaps, admit
from kodo.workflows.recipe_spec import RecipeBundle, RecipeSpec
from kodo.workflows.runs import start_run

_TOKEN = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")
_INTENT_KEYS = {"goal", "inputs", "constraints", "connectors"}


# --- instantiation (pure) ------------------------------------------------------------------------


def _lookup(path: str, scope: dict[str, Any]) -> Any:
    root, *rest = path.split(".")
    if root not in scope:
        raise InvalidInput(f"unknown template root: {path} (only formData.* may be used)", [{"key": path}])
    value: Any = scope[root]
    for part in rest:
        if not isinstance(value, dict) or part not in value:
            raise InvalidInput(f"missing template key: {path}", [{"key": path}])
        value = value[part]
    return value


def render(node: Any, scope: dict[str, Any]) -> Any:
    """Render a template: exact ``{{path}}`` strings keep the value's type, embedded ones become text."""
    if isinstance(node, dict):
        return {key: render(value, scope) for key, value in node.items()}
    if isinstance(node, list):
        return [render(value, scope) for value in node]
    if not isinstance(node, str):
        return node
    whole = _TOKEN.fullmatch(node)
    if whole:
        return copy.deepcopy(_lookup(whole.group(1), scope))

    def text(match: re.Match[str]) -> str:
        value = _lookup(match.group(1), scope)
        return value if isinstance(value, str) else canonical(value)

    return _TOKEN.sub(text, node)


def with_defaults(form_schema: dict[str, Any], form_data: dict[str, Any]) -> dict[str, Any]:
    """``formData`` with every missing top-level property that has a ``default`` filled in."""
    filled = dict(form_data)
    for name, prop in (form_schema.get("properties") or {}).items():
        if name not in filled and isinstance(prop, dict) and "default" in prop:
            filled[name] = copy.deepcopy(prop["default"])
    return filled


def intent_problems(intent: Any) -> list[str]:
    """Why a rendered template is not a valid intent (empty when it is)."""
    if not isinstance(intent, dict):
        return ["the template must render to an object"]
    problems = [f"unknown intent field {key!r}" for key in intent if key not in _INTENT_KEYS]
    if not isinstance(intent.get("goal"), str) or not intent["goal"].strip():
        problems.append("goal must be a non-empty string")
    for key in ("inputs", "constraints"):
        if not isinstance(intent.get(key), dict):
            problems.append(f"{key} must be an object")
    connectors = intent.get("connectors")
    if connectors is not None and not (isinstance(connectors, list) and all(isinstance(c, str) for c in connectors)):
        problems.append("connectors must be a list of strings")
    return problems


def instantiate(spec: dict[str, Any], form_data: Any) -> dict[str, Any]:
    """Form data → a valid intent (raises InvalidInput: 400, nothing written)."""
    if not isinstance(form_data, dict):
        raise InvalidInput("invalid formData: must be an object", [{"msg": "not an object"}])
    filled = with_defaults(spec["formSchema"], form_data)
    errors = schema_check.validate(filled, spec["formSchema"], "formData")
    if errors:
        raise InvalidInput("invalid formData: " + "; ".join(errors), [{"msg": e} for e in errors])
    intent = render(spec["intentTmpl"], {"formData": filled})
    problems = intent_problems(intent)
    if problems:
        raise InvalidInput("invalid Intent from template: " + "; ".join(problems), [{"msg": p} for p in problems])
    assert isinstance(intent, dict)
    return intent


def validate_spec(spec: RecipeSpec) -> None:
    """What pydantic cannot see: schema keywords, unique ids, and that every fixture instantiates."""
    problems = schema_check.unsupported_keywords(spec.formSchema, "formSchema")
    if spec.formSchema.get("type") != "object":
        problems.append("formSchema: type must be 'object'")
    for check in spec.eval:
        if check.kind == "jsonschema":
            problems += schema_check.unsupported_keywords(check.schema_, f"eval.{check.id}.schema")
    for label, ids in (("eval check", [c.id for c in spec.eval]), ("fixture", [f.id for f in spec.fixtures])):
        problems += [f"duplicate {label} id {i!r}" for i in sorted({i for i in ids if ids.count(i) > 1})]
    if not problems:
        normalized = spec.normalized()
        for fixture in spec.fixtures:
            try:
                instantiate(normalized, fixture.formData)
            except InvalidInput as error:
                problems.append(f"fixture {fixture.id!r}: {error.message}")
    if problems:
        raise InvalidInput(f"invalid recipe {spec.id}@{spec.v}: " + "; ".join(problems), [{"msg": p} for p in problems])


# --- the registry ----------------------------------------------------------------------------------


def parse_ref(ref: str) -> tuple[str, str]:
    """``id@v`` → (id, v)."""
    recipe_id, sep, v = ref.partition("@")
    if not sep or not recipe_id or not v:
        raise InvalidInput(f"a recipe reference is id@v (got {ref!r})")
    return recipe_id, v


def import_bundle(conn: sa.Connection, bundle: RecipeBundle) -> tuple[dict[str, Any], bool]:
    """Insert every version as a draft (identical content: no-op); returns (summary, anything created)."""
    for spec in bundle.versions:
        validate_spec(spec)
    rows: list[dict[str, Any]] = []
    created_any = False
    for spec in bundle.versions:
        version, created = versions.insert(conn, spec.normalized())
        created_any |= created
        rows.append(
            {"id": version.id, "v": version.v, "hash": version.hash, "status": version.status, "created": created}
        )
    rows.sort(key=lambda r: (str(r["id"]), versions.version_order(str(r["v"]))))
    return {"id": bundle.id, "versions": rows}, created_any


def export_bundle(conn: sa.Connection, recipe_id: str) -> dict[str, Any]:
    """``{id, versions: [spec, …]}`` in ascending ``v``; an unknown id exports no versions."""
    found = sorted(versions.list_versions(conn, recipe_id), key=lambda rv: versions.version_order(rv.v))
    return {"id": recipe_id, "versions": [rv.spec for rv in found]}


def export_text(conn: sa.Connection, recipe_id: str) -> str:
    """The canonical JSON text of an export (what the route returns and the CLI writes)."""
    return canonical(export_bundle(conn, recipe_id))


def promote(conn: sa.Connection, ref: str, to: str | None = None) -> RecipeVersion:
    """Promote ``id@v`` one step (or to ``to``); stable needs ≥ 1 eval check and ≥ 1 fixture."""
    recipe_id, v = parse_ref(ref)
    current = versions.get(conn, recipe_id, v)
    if current is None:
        raise NotFound(f"recipe version not found: {ref}")
    target = to or {"draft": "candidate", "candidate": "stable"}.get(current.status, "stable")
    return versions.promote(conn, recipe_id, v, target)


def version_row(conn: sa.Connection, version: RecipeVersion) -> dict[str, Any]:
    return {
        "id": version.id,
        "v": version.v,
        "name": version.spec.get("name"),
        "hash": version.hash,
        "status": version.status,
        "createdAt": int(version.created_at.timestamp() * 1000),
        "promotedAt": int(version.promoted_at.timestamp() * 1000) if version.promoted_at else None,
        "evalCount": len(version.eval_checks),
        "fixtureCount": versions.fixture_count(conn, version.id, version.v),
    }


def registry(conn: sa.Connection) -> list[dict[str, Any]]:
    """One row per recipe id: its latest version and the stable version it points at."""
    active = versions.active_versions(conn)
    by_id: dict[str, list[RecipeVersion]] = {}
    for version in versions.list_all(conn):
        by_id.setdefault(version.id, []).append(version)
    rows = []
    for recipe_id, found in sorted(by_id.items()):
        latest = found[-1]
        rows.append(
            {
                "id": recipe_id,
                "name": latest.spec.get("name"),
                "latestV": latest.v,
                "status": latest.status,
                "updatedAt": int(latest.created_at.timestamp() * 1000),
                "activeV": active.get(recipe_id),
                "stableRef": f"{recipe_id}@{active[recipe_id]}" if recipe_id in active else None,
                "versions": len(found),
                "tags": latest.spec.get("tags", []),
            }
        )
    return rows


# --- the canonical start -----------------------------------------------------------------------


def caps_of(version: RecipeVersion) -> QueueCaps:
    limits = version.spec["limits"]
    return QueueCaps(
        source=version.ref,
        queue_name=version.spec["queue"],
        max_concurrency=limits["maxFanout"],
        max_steps=limits["maxSteps"],
        max_sandbox_minutes=limits["maxSbxMin"],
    )


def _ensure_intent(conn: sa.Connection, intent: Intent) -> None:
    """Insert the content-addressed intent, or check the existing one came from the same recipe version."""
    if intents.create(conn, intent):
        return
    existing = intents.get(conn, intent.id)
    assert existing is not None
    drift = [
        {"field": name, "existing": getattr(existing, name), "incoming": getattr(intent, name)}
        for name in ("recipe_id", "recipe_v", "recipe_hash")
        if getattr(existing, name) != getattr(intent, name)
    ]
    if drift:
        raise IdentityDrift(f"intent hash conflict for {intent.id}: compiled from another recipe version", drift)


def start(
    conn: sa.Connection,
    client: DBOSClient,
    settings: Settings,
    *,
    recipe_id: str,
    v: str,
    form_data: Any,
    opts: dict[str, Any],
    fixture: dict[str, Any] | None = None,
) -> tuple[Run, bool]:
    """Compile ``recipeRef`` + ``formData`` into an intent and start (or replay) its run; see the module doc."""
    version = versions.get(conn, recipe_id, v)
    if version is None:
        raise NotFound(f"recipe version not found: {recipe_id}@{v}")
    request = dict(opts)
    allow_draft = bool(request.pop("allowDraft", False))
    if version.status != "stable" and not allow_draft:
        raise Conflict(
            f"recipe version {version.ref} is {version.status}: only stable versions start "
            "(set opts.allowDraft to run a draft or candidate)",
            status=version.status,
        )
    body = instantiate(version.spec, form_data)
    repositories.check_inputs(body["inputs"], settings)
    limits.check_intent(body["constraints"], settings)
    if fixture is not None:  # fixture trials are distinct runs: the trial is part of the intent
        body = {**body, "inputs": {**body["inputs"], "fixture": fixture}}
    intent_id = recipe_intent_id(body)
    if "autoApprove" not in request and version.spec.get("autoApprove"):
        request["autoApprove"] = True
    admitted = admit(conn, settings, intent_id, request, caps=caps_of(version))
    intent_hash = sha256_hex(body)
    admitted = dataclasses.replace(
        admitted,
        intent_hash=intent_hash,
        recipe_id=version.id,
        recipe_v=version.v,
        recipe_hash=version.hash,
    )
    _ensure_intent(
        conn,
        Intent(
            id=intent_id,
            goal=body["goal"],
            inputs=body["inputs"],
            constraints=body["constraints"],
            connectors=body.get("connectors"),
            intent_hash=intent_hash,
            recipe_id=version.id,
            recipe_v=version.v,
            recipe_hash=version.hash,
        ),
    )
    return start_run(conn, client, settings, admitted)
