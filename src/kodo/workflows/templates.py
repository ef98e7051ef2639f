"""Sandbox templates: resolved once per run phase, before fan-out, and part of every task key.

A recipe version's dependency set is ``sandbox: {envRef, deps}`` (default ``local-python-3.11``, no deps);
``depsHash = sha256(canonical({envRef, deps}))`` and the template key is ``<id>:<v>:<depsHash>``.

* no recipe (intent routes) → **cold**, ``env:<envRef>`` (the task keys of those runs never change);
* a registered row for ``(id, v, depsHash)`` → **hot**: the provider boots ``templateId``;
* no row → **cold** with the recipe's key: the provider boots ``envRef``;
* a row whose key is not the one computed here → **drift**: the run fails ``SBX_TEMPLATE_DRIFT``.

``kodo sbx template register id@v --template-id …`` writes a row; rows are immutable (registering the
same key with another template id is refused).
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, final

import sqlalchemy as sa

from kodo.errors import NotFound
from kodo.identity import sha256_hex
from kodo.store import recipe_versions, sbx_templates
from kodo.store.sbx_templates import SbxTemplate
from kodo.workflows.context import FailureJson, RunContext
from kodo.workflows.runtime import transact

DEFAULT_ENV = "local-python-3.11"


@final
class TemplateJson(TypedDict):
    """A run's resolved sandbox template (checkpointed as ``templates.resolve``; part of every task key)."""

    source: str  # hot | cold
    envRef: str
    templateKey: str
    templateRef: str
    templateId: str | None
    depsHash: str
    deps: NotRequired[list[str]]  # installed by the local sandbox (kodo.workflows.environments)


@final
class TemplateErrorJson(TypedDict):
    """A resolution that failed: the recipe version is gone, or the registry drifted."""

    error: FailureJson


def default_resolution() -> TemplateJson:
    return {
        "source": "cold",
        "envRef": DEFAULT_ENV,
        "templateKey": f"env:{DEFAULT_ENV}",
        "templateRef": DEFAULT_ENV,
        "templateId": None,
        "depsHash": sha256_hex({"envRef": DEFAULT_ENV}),
    }


def sandbox_of(spec: dict[str, Any]) -> tuple[str, list[str]]:
    block = spec.get("sandbox") or {}
    return str(block.get("envRef") or DEFAULT_ENV), [str(d) for d in block.get("deps", [])]


def deps_hash(spec: dict[str, Any]) -> str:
    env_ref, deps = sandbox_of(spec)
    return sha256_hex({"envRef": env_ref, "deps": deps})


def template_key(recipe_id: str, v: str, digest: str) -> str:
    return f"{recipe_id}:{v}:{digest}"


def resolve_in(conn: sa.Connection, recipe_id: str, v: str) -> TemplateJson | TemplateErrorJson:
    """Hot, cold or drift (``error`` set) for a recipe version, as of now."""
    version = recipe_versions.get(conn, recipe_id, v)
    if version is None:
        return {"error": {"code": "RECIPE_NOT_FOUND", "message": f"recipe version not found: {recipe_id}@{v}"}}
    env_ref, _deps = sandbox_of(version.spec)
    digest = deps_hash(version.spec)
    key = template_key(recipe_id, v, digest)
    resolution: TemplateJson = {
        "source": "cold",
        "envRef": env_ref,
        "templateKey": key,
        "templateRef": env_ref,
        "templateId": None,
        "depsHash": digest,
        "deps": _deps,
    }
    row = sbx_templates.get(conn, recipe_id, v, digest)
    if row is None:
        return resolution
    if row.template_key != key:
        return {
            "error": {
                "code": "SBX_TEMPLATE_DRIFT",
                "message": f"sbx template drift: registry holds {row.template_key} for {key}",
            }
        }
    return {**resolution, "source": "hot", "templateId": row.template_id, "templateRef": row.template_id}


def resolve(ctx: RunContext) -> TemplateJson | TemplateErrorJson:
    """The run's template (checkpointed, so a replay sees the same answer); ``error`` on drift."""
    if not ctx.recipe_id:
        return default_resolution()
    return transact("templates.resolve", resolve_in, ctx.recipe_id, ctx.recipe_v or "")


def register(
    conn: sa.Connection, recipe_id: str, v: str, template_id: str, *, boot_ms: int | None = None, by: str | None = None
) -> tuple[SbxTemplate, bool]:
    """Register the template of a recipe version's current dependency set; returns (row, created)."""
    version = recipe_versions.get(conn, recipe_id, v)
    if version is None:
        raise NotFound(f"recipe version not found: {recipe_id}@{v}")
    env_ref, deps = sandbox_of(version.spec)
    digest = deps_hash(version.spec)
    meta: dict[str, Any] = {"envRef": env_ref, "deps": deps, "registeredBy": by or "cli"}
    if boot_ms is not None:
        meta["bootMs"] = boot_ms
    return sbx_templates.register(
        conn,
        recipe_id=recipe_id,
        recipe_v=v,
        deps_hash=digest,
        template_key=template_key(recipe_id, v, digest),
        template_id=template_id,
        build_meta=meta,
    )
