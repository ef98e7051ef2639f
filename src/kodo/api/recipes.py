"""Recipe routes: the registry (list, versions, import, export), the canonical start ``POST /api/run``
and a run's eval results."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from kodo.access import Principal
from kodo.api.access import principal, requires
from kodo.api.answers import (
    EvalAnswer,
    ImportAnswer,
    RecipeAnswer,
    RecipeBundleAnswer,
    RecipeVersionAnswer,
    RunHeaderAnswer,
    answers,
)
from kodo.api.deps import ApiContext, context
from kodo.api.openapi import body
from kodo.api.schemas import RunStartBody, parse_body
from kodo.errors import Conflict, IdentityDrift
from kodo.store import eval_results
from kodo.store import recipe_versions as versions
from kodo.views import read_by_key
from kodo.views.runs import RunHeader, header, require_run
from kodo.workflows import recipes
from kodo.workflows.recipe_spec import RecipeBundle, RecipeExportRequest

router = APIRouter()


@router.get("/api/recipes", response_model=list[RecipeAnswer], responses=answers(200, None))
@requires("viewer", scoping="shared")
def list_recipes(request: Request) -> JSONResponse:
    """One row per recipe: latest version, its status, and the stable version it points at (``stableRef``)."""
    with context(request).read() as conn:
        return JSONResponse(recipes.registry(conn))


@router.get("/api/recipes/{recipe_id}/versions", response_model=list[RecipeVersionAnswer])
@requires("viewer", scoping="shared")
def list_versions(recipe_id: str, request: Request) -> JSONResponse:
    """Every version of a recipe, highest ``v`` first; an unknown id has none (``[]``)."""
    with context(request).read() as conn:
        return JSONResponse([recipes.version_row(conn, v) for v in versions.list_versions(conn, recipe_id)])


@router.post(
    "/api/recipes/import",
    openapi_extra=body(RecipeBundle),
    status_code=201,
    responses={**answers(201, ImportAnswer, 409), 200: {"model": ImportAnswer, "description": "All of it was there"}},
)
@requires("admin", scoping="shared")
async def import_recipes(request: Request) -> JSONResponse:
    """Import a bundle as drafts: 201 when something was new, 200 when all of it was already there; a
    conflicting draft or stable version is a 409 and nothing of the bundle is written."""
    bundle = await parse_body(request, RecipeBundle)
    ctx = context(request)

    def _import() -> tuple[dict[str, Any], bool]:
        with ctx.transaction() as conn:
            return recipes.import_bundle(conn, bundle)

    summary, created = await run_in_threadpool(_import)
    return JSONResponse(summary, status_code=201 if created else 200)


@router.post(
    "/api/recipes/export",
    openapi_extra=body(RecipeExportRequest),
    response_model=RecipeBundleAnswer,
)
@requires("viewer", scoping="shared")
async def export_recipes(request: Request) -> Response:
    """The canonical JSON bundle of a recipe's versions (ascending ``v``); it imports back unchanged."""
    body = await parse_body(request, RecipeExportRequest)
    text = await run_in_threadpool(read_by_key, context(request), recipes.export_text, body.id)
    return Response(content=text.encode("utf-8"), media_type="application/json")


_OTHER_TENANT = "a run with this identity exists outside your tenant (change formData to start another)"


def _start(ctx: ApiContext, body: RunStartBody, who: Principal | None) -> tuple[RunHeader, bool]:
    opts = body.opts.model_dump(exclude_none=True) if body.opts else {}
    if who is not None and not who.everywhere:  # with tokens, a run's tenant is its token's
        opts["tenantId"] = who.tenant
    with ctx.transaction() as conn:
        try:
            run, replay = recipes.start(
                conn,
                ctx.client,
                ctx.settings,
                recipe_id=body.recipeRef.id,
                v=body.recipeRef.v,
                form_data=body.formData,
                opts=opts,
            )
        except IdentityDrift as drift:
            # A recipe intent's id is its content's hash: another tenant may have started the same one.
            theirs = next((d["existing"] for d in drift.drift if d["field"] == "queue_partition_key"), None)
            if who is not None and theirs is not None and not who.sees(theirs):
                raise Conflict(_OTHER_TENANT) from None
            raise
        if who is not None and not who.sees(run.queue_partition_key):
            raise Conflict(_OTHER_TENANT)
        return header(ctx, conn, run), replay


@router.post(
    "/api/run",
    openapi_extra=body(RunStartBody),
    status_code=201,
    responses={**answers(201, RunHeaderAnswer, 404, 409), 200: {"model": RunHeaderAnswer, "description": "A replay"}},
)
@requires("approver", partition_field=("opts", "queuePartitionKey"))
async def start_recipe_run(request: Request) -> JSONResponse:
    """Start a run from a pinned recipe version and form data: 201 new, 200 replay (``isReplay``),
    409 with ``drift`` for the same intent with different identity fields."""
    body = await parse_body(request, RunStartBody)
    view, replay = await run_in_threadpool(_start, context(request), body, principal(request))
    return JSONResponse({**view, "isReplay": replay}, status_code=200 if replay else 201)


@router.get("/api/runs/{wid}/evals", response_model=list[EvalAnswer])
@requires("viewer")
def list_evals(wid: str, request: Request) -> JSONResponse:
    """The run's eval results, one per check (empty until its ExecuteST succeeded)."""
    with context(request).read() as conn:
        run = require_run(conn, wid)
        return JSONResponse(eval_results.list_for_run(conn, run.id))
