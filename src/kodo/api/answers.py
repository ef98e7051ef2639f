"""What the routes answer, for the OpenAPI document: response models, error shapes, and the document's
finishing pass.

The routes build their JSON by hand (the read model, :mod:`kodo.views`, as TypedDicts) and return it as a
``JSONResponse``, so FastAPI neither re-validates nor filters it; these declarations describe it. Open
models (``extra="allow"``) name the fields a client relies on and allow more. :func:`document` adds to
every operation the error answers every route can give (400 for a refused Host, 401/403 with tokens,
503 while the database is away; 413/415 for writes; 404 for a route addressed by key) and removes
FastAPI's 422, which kodo never answers. ``tests/integration/test_openapi_answers.py`` walks every route
of the document and checks real answers against it; the fuzz test checks status codes, media types and
bodies against it too.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict

HeaderStatus = Literal["ENQUEUED", "PENDING", "WAITING_INPUT", "SUCCESS", "ERROR", "CANCELLED"]
ERRORS = {
    400: "Invalid input: nothing was written",
    401: "No valid bearer token (when kodo has tokens)",
    403: "The token's role or tenant does not allow this (or a write from a foreign Origin)",
    404: "Not found (or another tenant's)",
    409: "Conflicts with the recorded state",
    410: "A legacy route that this kodo has turned off",
    413: "Request body too large",
    415: "A write whose body is not JSON",
    503: "The database is unavailable: retry after Retry-After seconds",
}
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class ErrorAnswer(BaseModel):
    """Every error answer: a message, and for invalid input the details (``drift`` for an identity drift)."""

    error: str
    details: list[Any] | None = None
    code: str | None = None
    drift: list[dict[str, Any]] | None = None


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class IntentAnswer(_Open):
    intentId: str


class RunErrorAnswer(_Open):
    code: str
    message: str


class RecipeRefAnswer(_Open):
    id: str
    v: str | None


class RunHeaderAnswer(_Open):
    """The RunHeader (:class:`kodo.views.runs.RunHeader`), every field; a start's answer adds ``isReplay``."""

    workflowID: str
    runId: str
    intentId: str
    status: HeaderStatus
    durableStatus: str
    dbosStatus: str | None
    workflowName: str
    currentWorkflowID: str
    recipeRef: RecipeRefAnswer | None
    recipeHash: str | None
    intentHash: str | None
    createdAt: int
    updatedAt: int
    queue: str | None
    priority: int | None
    lane: str | None
    queuePartitionKey: str | None
    tenantId: str | None
    budget: dict[str, int | float] | None
    budgetViolation: dict[str, Any] | None
    spend: dict[str, Any]
    evalSummary: dict[str, int] | None
    nextAction: str | None
    lastStep: str | None
    retryCount: int
    traceId: str | None
    spanId: None
    topology: str
    runtimeMode: str
    ocMode: str
    ocStrictMode: bool
    sbxMode: str
    sbxProvider: str
    sbxUnisolatedAllowed: bool
    appVersion: str
    workflowVersion: str | None
    claimScope: str
    otelTraceId: str | None
    traceUrl: str | None
    traceBaseUrl: str | None = None
    error: RunErrorAnswer | None = None
    isReplay: bool | None = None


class GateAnswer(_Open):
    workflowID: str
    gateKey: str
    topic: str
    purpose: str
    stepID: str
    generation: int
    state: Literal["PENDING", "RECEIVED", "RESOLVED", "TIMED_OUT"]
    prompt: dict[str, Any] | None
    result: dict[str, Any] | None
    decision: dict[str, Any] | None
    origin: str | None
    createdAt: int | None
    deadlineAt: int | None
    resolvedAt: int | None
    review: dict[str, Any] | None = None  # one plan gate's answer: the plan and the diff it approves


class ReplyAnswer(_Open):
    ok: bool
    isReplay: bool


class OkAnswer(_Open):
    ok: bool


class ApprovalAnswer(_Open):
    accepted: bool
    runId: str
    approvedAt: str


class LegacyStartAnswer(_Open):
    runId: str
    workflowId: str


class LegacyEventAnswer(_Open):
    accepted: bool
    isReplay: bool
    gateKey: str


class RetryAnswer(_Open):
    accepted: bool
    newRunId: str
    fromStep: str


class InboxAnswer(_Open):
    workflowID: str
    runId: str
    gateKey: str
    topic: str
    purpose: str
    nextAction: str | None
    deadline: int | None
    slaStatus: Literal["NORMAL", "WARNING", "CRITICAL"]
    mismatchRisk: bool
    createdAt: int | None
    details: Any = None


class DiagnosisAnswer(_Open):
    code: str
    reason: str


class RecipeAnswer(_Open):
    id: str
    latestV: str
    status: str
    stableRef: str | None


class HealthAnswer(_Open):
    ok: bool
    role: str
    runtimeMode: str
    appVersion: str
    pid: int
    unisolatedSandboxAllowed: bool | None = None


class AcceptedAnswer(_Open):
    accepted: bool
    workflowId: str


class RecipeVersionAnswer(_Open):
    id: str
    v: str
    status: str


class RecipeBundleAnswer(_Open):
    """A recipe's versions as a canonical bundle (none for an unknown id); it imports back unchanged."""

    versions: list[dict[str, Any]]


class ImportAnswer(_Open):
    """What an import wrote (or found already there)."""


class EvalAnswer(_Open):
    """One eval check's result."""


class RunDeliveryAnswer(_Open):
    runId: str
    mode: str
    status: str
    sourceRepo: str | None
    branch: str | None
    baseCommit: str | None
    commit: str | None
    artifactUri: str | None
    error: Any
    requestedBy: str | None
    command: str | None


class OpsAnswer(_Open):
    """An ops-plane answer (an object): see the route's description for its fields."""


class ArtifactStubAnswer(_Open):
    """An artifact whose content is kept elsewhere: its identity only."""

    uri: str
    kind: str
    sha256: str


def answers(ok: int, model: Any, *errors: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: its success model (``None`` when ``response_model`` says it) and the error
    statuses particular to it (:func:`document` adds those every route can answer)."""
    described: dict[int | str, dict[str, Any]] = {}
    if model is not None:
        described[ok] = {"model": model, "description": "Success"}
    for status in errors:
        described[status] = {"model": ErrorAnswer, "description": ERRORS[status]}
    return described


def media(ok: int, media_type: str, description: str, schema: dict[str, Any] | None = None) -> dict[int | str, Any]:
    """``responses=`` for a success that is not JSON (an event stream, a diff, text)."""
    return {ok: {"description": description, "content": {media_type: {"schema": schema or {"type": "string"}}}}}


_ERROR_REF = {"$ref": "#/components/schemas/ErrorAnswer"}


def _finish(operation: dict[str, Any], method: str, path: str, public: bool) -> None:
    responses: dict[str, Any] = operation["responses"]
    responses.pop("422", None)
    statuses = [400, 503] + ([] if public else [401, 403])
    if method in WRITES:
        statuses += [413, 415]
    if "{" in path:
        statuses.append(404)
    for status in statuses:
        responses.setdefault(
            str(status), {"description": ERRORS[status], "content": {"application/json": {"schema": _ERROR_REF}}}
        )
    for answer in responses.values():  # FastAPI's default JSON entry beside a declared non-JSON success
        content = answer.get("content", {})
        if len(content) > 1 and content.get("application/json", {}).get("schema") == {}:
            del content["application/json"]
    operation["responses"] = dict(sorted(responses.items()))


def document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document (built once): FastAPI's, finished by :func:`_finish` for every operation (one that
    needs no token says so with OpenAPI's own ``security: []``)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            _finish(operation, method.upper(), path, operation.get("security") == [])
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["ErrorAnswer"] = ErrorAnswer.model_json_schema(ref_template="#/components/schemas/{model}")
    app.openapi_schema = schema
    return schema
