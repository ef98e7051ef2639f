"""Webhook routes: subscriptions (``/api/webhooks``, admin) and deliveries (operator; redeliver by hand).

A subscription belongs to the creating token's tenant and hears about that tenant's runs only; without
tokens it is tenant ``*`` and hears about every run. Its signing secret is answered once, at creation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints

from kodo.api.access import principal, requires
from kodo.api.answers import ErrorAnswer
from kodo.api.deps import context
from kodo.api.openapi import body
from kodo.api.schemas import Strict, parse_body
from kodo.errors import InvalidInput, NotFound
from kodo.store import webhooks as store
from kodo.workflows import webhooks

router = APIRouter()

MAX_LIST = 500


# --- what the routes answer (documented in the OpenAPI schema; tests/integration/test_webhook_openapi.py
# checks each answer against it) -------------------------------------------------------------------------


class SubscriptionAnswer(BaseModel):
    id: str
    url: str
    events: list[str]
    tenant: str
    description: str | None
    createdBy: str | None
    createdAt: str
    secret: str | None = Field(None, description="The signing secret: only in the answer to the create.")


class DeliveryAnswer(BaseModel):
    id: str
    eventId: str
    eventType: str
    subscriptionId: str
    url: str
    state: store.DeliveryState
    attempts: int
    redeliveries: int
    workflowId: str
    lastStatus: int | None
    lastError: str | None
    createdAt: str
    updatedAt: str
    deliveredAt: str | None


class TryAnswer(BaseModel):
    round: int
    attempt: int
    status: int | None
    error: str | None
    at: str


class DeliveryDetailAnswer(DeliveryAnswer):
    tries: list[TryAnswer]


class DeletedAnswer(BaseModel):
    id: str
    deleted: bool


class RedeliveryAnswer(BaseModel):
    id: str
    state: Literal["pending"]
    workflowId: str


def _answers(ok: int, model: type[BaseModel] | None, *errors: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: its success model and the error statuses it can answer."""
    described: dict[int | str, dict[str, Any]] = {}
    if model is not None:
        described[ok] = {"model": model, "description": "Success"}
    for status in (401, 403, *errors):
        described[status] = {"model": ErrorAnswer, "description": ERROR_TEXT[status]}
    return described


ERROR_TEXT = {
    400: "Invalid input (nothing was written)",
    401: "No valid bearer token (when kodo has tokens)",
    403: "The token's role is too low",
    404: "Not found (or another tenant's)",
    409: "Conflicts with the recorded state",
}


class SubscriptionBody(Strict):
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    events: Annotated[list[store.EventType], Field(min_length=1, max_length=len(store.EVENT_TYPES))]
    description: Annotated[str, StringConstraints(max_length=500)] | None = None


def _tenant(request: Request) -> str | None:
    """The tenant whose subscriptions the caller reaches (``None``: all of them)."""
    who = principal(request)
    return None if who is None or who.everywhere else who.tenant


def subscription_row(subscription: store.Subscription, *, secret: str | None = None) -> dict[str, Any]:
    """A subscription as answered; ``secret`` (the clear signing secret) only in the answer to its creation."""
    row: dict[str, Any] = {
        "id": subscription.id,
        "url": subscription.url,
        "events": list(subscription.events),
        "tenant": subscription.tenant,
        "description": subscription.description,
        "createdBy": subscription.created_by,
        "createdAt": subscription.created_at.isoformat(),
    }
    if secret is not None:
        row["secret"] = secret
    return row


def delivery_row(delivery: store.Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "eventId": delivery.event_id,
        "eventType": delivery.event_type,
        "subscriptionId": delivery.subscription_id,
        "url": delivery.url,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "redeliveries": delivery.redeliveries,
        "workflowId": delivery.workflow_id,
        "lastStatus": delivery.last_status,
        "lastError": delivery.last_error,
        "createdAt": delivery.created_at.isoformat(),
        "updatedAt": delivery.updated_at.isoformat(),
        "deliveredAt": delivery.delivered_at.isoformat() if delivery.delivered_at else None,
    }


@router.post(
    "/api/webhooks",
    openapi_extra=body(SubscriptionBody),
    status_code=201,
    responses=_answers(201, SubscriptionAnswer, 400),
)
@requires("admin", scoping="filtered")
async def create_subscription(request: Request) -> JSONResponse:
    """Subscribe a URL (loopback or ``KODO_WEBHOOK_ALLOWED_HOSTS`` only) to event types; 201 with the
    signing secret (shown only here). A refused URL is a 400 and writes nothing."""
    parsed = await parse_body(request, SubscriptionBody)
    ctx = context(request)
    webhooks.check_target(parsed.url, ctx.settings)
    who = principal(request)

    def _create() -> tuple[store.Subscription, str]:
        with ctx.transaction() as conn:
            return webhooks.subscribe(
                conn,
                ctx.settings,
                tenant="*" if who is None else who.tenant,
                partitions=None if who is None else who.like_patterns(),
                url=parsed.url,
                events=list(parsed.events),
                description=parsed.description,
                created_by=None if who is None else who.subject,
            )

    created, secret = await run_in_threadpool(_create)
    return JSONResponse(subscription_row(created, secret=secret), status_code=201)


@router.get("/api/webhooks", responses=_answers(200, None), response_model=list[SubscriptionAnswer])
@requires("admin", scoping="filtered")
def list_subscriptions(request: Request) -> JSONResponse:
    """The caller's tenant's live subscriptions (every tenant's for a tenant-``*`` token), without secrets."""
    with context(request).read() as conn:
        found = store.list_subscriptions(conn, _tenant(request))
    return JSONResponse([subscription_row(s) for s in found])


@router.delete("/api/webhooks/{subscription_id}", responses=_answers(200, DeletedAnswer, 404))
@requires("admin", scoping="filtered")
def delete_subscription(subscription_id: str, request: Request) -> JSONResponse:
    """Stop a subscription (404 when the tenant has none by that id); its deliveries stay on record."""
    with context(request).transaction() as conn:
        if not store.delete_subscription(conn, subscription_id, _tenant(request)):
            raise NotFound(f"webhook subscription not found: {subscription_id}")
    return JSONResponse({"id": subscription_id, "deleted": True})


def _query(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise InvalidInput(f"invalid query: {name} given more than once")
    return values[0] if values else None


@router.get(
    "/api/webhooks/deliveries",
    response_model=list[DeliveryAnswer],
    responses=_answers(200, None, 400),
    openapi_extra={
        "parameters": [
            {"name": "state", "in": "query", "schema": {"type": "string", "enum": list(store.DELIVERY_STATES)}},
            {"name": "subscription", "in": "query", "schema": {"type": "string"}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST}},
            {"name": "before", "in": "query", "schema": {"type": "string"}},
        ]
    },
)
@requires("operator", scoping="filtered")
def list_deliveries(request: Request) -> JSONResponse:
    """Deliveries, newest first; ``?state=dead`` lists those that ran out of tries. Pages: ``?before=<the last
    delivery id of the previous page>``."""
    state = _query(request, "state")
    if state is not None and state not in store.DELIVERY_STATES:
        raise InvalidInput(f"invalid query: state must be one of {', '.join(store.DELIVERY_STATES)}")
    limit_text = _query(request, "limit") or "100"
    if not limit_text.isdecimal() or not 1 <= int(limit_text) <= MAX_LIST:
        raise InvalidInput(f"invalid query: limit must be an integer from 1 to {MAX_LIST}")
    with context(request).read() as conn:
        found = store.list_deliveries(
            conn,
            tenant=_tenant(request),
            state=state,
            subscription_id=_query(request, "subscription"),
            limit=int(limit_text),
            before=_query(request, "before"),
        )
    return JSONResponse([delivery_row(d) for d in found])


@router.get("/api/webhooks/deliveries/{delivery_id}", responses=_answers(200, DeliveryDetailAnswer, 404))
@requires("operator", scoping="filtered")
def get_delivery(delivery_id: str, request: Request) -> JSONResponse:
    """One delivery with every HTTP attempt it made (status or error each)."""
    with context(request).read() as conn:
        delivery = store.get_delivery(conn, delivery_id, _tenant(request))
        if delivery is None:
            raise NotFound(f"webhook delivery not found: {delivery_id}")
        attempts = store.attempts_of(conn, delivery_id)
    row = delivery_row(delivery)
    row["tries"] = [
        {"round": a.round, "attempt": a.attempt, "status": a.status, "error": a.error, "at": a.at.isoformat()}
        for a in attempts
    ]
    return JSONResponse(row)


@router.post(
    "/api/webhooks/deliveries/{delivery_id}/redeliver",
    status_code=202,
    responses=_answers(202, RedeliveryAnswer, 404, 409),
)
@requires("operator", scoping="filtered")
def redeliver(delivery_id: str, request: Request) -> JSONResponse:
    """Send a dead (or delivered) delivery again, with the same ``webhook-id``; 409 while it is pending."""
    ctx = context(request)
    with ctx.transaction() as conn:
        workflow_id = webhooks.redeliver(conn, ctx.client, ctx.settings, delivery_id, _tenant(request))
    return JSONResponse({"id": delivery_id, "state": "pending", "workflowId": workflow_id}, status_code=202)
