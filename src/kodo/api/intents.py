"""``POST /api/intents`` and the legacy ``POST /intents``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kodo.api.access import requires
from kodo.api.answers import IntentAnswer, answers
from kodo.api.deps import context
from kodo.api.openapi import body
from kodo.api.schemas import IntentBody, parse_body
from kodo.identity import new_intent_id
from kodo.models import Intent
from kodo.store import intents
from kodo.workflows import limits, repositories

router = APIRouter()


async def _create(request: Request) -> JSONResponse:
    body = await parse_body(request, IntentBody)
    ctx = context(request)
    repositories.check_inputs(body.inputs, ctx.settings)
    limits.check_intent(body.constraints, ctx.settings)

    def _insert() -> Intent:
        with ctx.transaction() as conn:
            while True:  # a fresh random id; a collision (2^-64) simply draws again, never overwrites
                intent = Intent(
                    id=new_intent_id(),
                    goal=body.goal,
                    inputs=body.inputs,
                    constraints=body.constraints,
                    connectors=body.connectors,
                )
                if intents.create(conn, intent):
                    return intent

    intent = await run_in_threadpool(_insert)  # off the event loop: the commit waits for the disk
    return JSONResponse({"intentId": intent.id}, status_code=201)


@router.post(
    "/api/intents",
    openapi_extra=body(IntentBody),
    status_code=201,
    responses=answers(201, IntentAnswer, 400, 413),
)
@requires("approver", scoping="shared")
async def create_intent(request: Request) -> JSONResponse:
    """Create an intent: 201 ``{"intentId": "it_…"}``."""
    return await _create(request)


@router.post("/intents", openapi_extra=body(IntentBody), status_code=201, responses=answers(201, IntentAnswer))
@requires("approver", scoping="shared")
async def create_intent_legacy(request: Request) -> JSONResponse:
    """The legacy alias of ``POST /api/intents``."""
    return await _create(request)
