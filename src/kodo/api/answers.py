"""Response models of the routes ``kodo.client`` uses, for the OpenAPI document only.

The routes still build their JSON by hand (and return it as a ``JSONResponse``, so FastAPI does not
re-validate or filter it); these models describe it. They name the fields a client relies on and allow
more (a field added to an answer does not break the document). ``tests/integration/
test_openapi_answers.py`` checks real answers against them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from kodo.api.webhooks import ErrorAnswer

HeaderStatus = Literal["ENQUEUED", "PENDING", "WAITING_INPUT", "SUCCESS", "ERROR", "CANCELLED"]
ERRORS = {
    400: "Invalid input: nothing was written",
    401: "No valid bearer token (when kodo has tokens)",
    403: "The token's role or tenant does not allow this",
    404: "Not found (or another tenant's)",
    409: "Conflicts with the recorded state",
    413: "Request body too large",
}


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class IntentAnswer(_Open):
    intentId: str


class RunErrorAnswer(_Open):
    code: str
    message: str


class RunHeaderAnswer(_Open):
    workflowID: str
    runId: str
    intentId: str
    status: HeaderStatus
    durableStatus: str
    dbosStatus: str | None
    nextAction: str | None
    lastStep: str | None
    retryCount: int
    queuePartitionKey: str | None
    createdAt: int
    updatedAt: int
    error: RunErrorAnswer | None = None
    isReplay: bool | None = None


class GateAnswer(_Open):
    workflowID: str
    gateKey: str
    topic: str
    purpose: str
    state: Literal["PENDING", "RECEIVED", "RESOLVED", "TIMED_OUT"]
    prompt: dict[str, Any] | None
    result: dict[str, Any] | None
    decision: dict[str, Any] | None
    createdAt: int | None
    deadlineAt: int | None
    resolvedAt: int | None


class ReplyAnswer(_Open):
    ok: bool
    isReplay: bool


class ApprovalAnswer(_Open):
    accepted: bool
    runId: str
    approvedAt: str


class InboxAnswer(_Open):
    workflowID: str
    runId: str
    gateKey: str
    topic: str
    purpose: str
    nextAction: str | None
    deadline: int | None
    slaStatus: Literal["NORMAL", "WARNING", "CRITICAL"]


class DiagnosisAnswer(_Open):
    code: str
    reason: str


class RecipeAnswer(_Open):
    id: str
    latestV: str
    status: str
    stableRef: str | None


def answers(ok: int, model: Any, *errors: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: its success model (``None`` when ``response_model`` says it) and the error
    statuses it can answer (401 and 403 always: every route but /healthz needs a token when tokens are on)."""
    described: dict[int | str, dict[str, Any]] = {}
    if model is not None:
        described[ok] = {"model": model, "description": "Success"}
    for status in (401, 403, *errors):
        described[status] = {"model": ErrorAnswer, "description": ERRORS[status]}
    return described
