"""Request bodies at the edge: strict pydantic models (unknown fields and wrong types are 400s)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Request
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from kodo.errors import InvalidInput

NonEmpty = Annotated[str, StringConstraints(min_length=1)]
M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class IntentBody(Strict):
    goal: NonEmpty
    inputs: dict[str, Any]
    constraints: dict[str, Any]
    connectors: list[str] | None = None

    @model_validator(mode="after")
    def _delivery(self) -> IntentBody:
        """``constraints.deliver`` (kodo.workflows.delivery) is "branch", and needs ``inputs.repo``;
        ``constraints.mergeGate`` is a boolean, and true only with ``deliver``."""
        deliver = self.constraints.get("deliver")
        if deliver is not None and deliver != "branch":
            raise ValueError('constraints.deliver must be "branch" (a commit on branch kodo/<runId> of inputs.repo)')
        if deliver is not None and not isinstance(self.inputs.get("repo"), str):
            raise ValueError("constraints.deliver needs inputs.repo: the git repository to deliver to")
        merge_gate = self.constraints.get("mergeGate")  # kodo.workflows.merge_gate
        if merge_gate is not None and not isinstance(merge_gate, bool):
            raise ValueError("constraints.mergeGate must be true or false (a human gate before the delivery)")
        if merge_gate is True and deliver is None:
            raise ValueError('constraints.mergeGate needs constraints.deliver = "branch": it gates the delivery')
        return self


class WorkloadBody(Strict):
    concurrency: Annotated[int, Field(ge=0)]
    steps: Annotated[int, Field(ge=0)]
    sandboxMinutes: Annotated[int, Field(ge=0)]


class BudgetBody(Strict):
    maxFanout: Annotated[int, Field(ge=1)]
    maxSBXMinutes: Annotated[int, Field(ge=1)]
    maxArtifactsMB: Annotated[int, Field(ge=1)]
    maxRetriesPerStep: Annotated[int, Field(ge=0)]
    # Seed runbook 000 spells it maxWallClockMs: both spellings are accepted (not both at once) and stored
    # as maxWallClockMS, so either spelling gives the same run identity.
    maxWallClockMS: Annotated[int, Field(ge=1, validation_alias=AliasChoices("maxWallClockMS", "maxWallClockMs"))]
    # Spend (docs/budgets.md): tokens (input + output) and USD over all of the run's live agent calls.
    maxTokens: Annotated[int, Field(ge=1)] | None = None
    maxCostUsd: Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)] | None = None


class _RunFields(Strict):
    """What a run start may say about queueing, limits and identity (intent routes and ``opts``)."""

    traceId: str | None = None
    queueName: Literal["compileQ", "sbxQ", "controlQ", "intentQ"] | None = None
    lane: Literal["interactive", "batch"] | None = None
    priority: Annotated[int, Field(ge=1, le=2_147_483_647)] | None = None
    deduplicationID: str | None = None
    timeoutMS: Annotated[int, Field(ge=1)] | None = None
    workload: WorkloadBody | None = None
    tenantId: NonEmpty | None = None
    taskKey: NonEmpty | None = None
    queuePartitionKey: NonEmpty | None = None
    budget: BudgetBody | None = None
    autoApprove: bool | None = None


class RunRequestBody(_RunFields):
    recipeName: str | None = None
    recipeVersion: int | None = None


class RunOptsBody(_RunFields):
    """``opts`` of ``POST /api/run``: the recipe is pinned by ``recipeRef``, so no recipeName/recipeVersion."""

    allowDraft: bool | None = None


class RecipeRefBody(Strict):
    id: NonEmpty
    v: NonEmpty


class RunStartBody(Strict):
    recipeRef: RecipeRefBody
    formData: dict[str, Any]
    opts: RunOptsBody | None = None


class ApiRunBody(RunRequestBody):
    intentId: NonEmpty


class PlanApprovalBody(Strict):
    approvedBy: NonEmpty
    notes: str | None = None


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def unstorable_text(text: str) -> str | None:
    """Why Postgres could not store ``text`` (a NUL character, a lone surrogate), or None."""
    if "\x00" in text:
        return "NUL (\\u0000) characters are not allowed"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "lone UTF-16 surrogates are not allowed"
    return None


def _unstorable(value: Any) -> str | None:
    if isinstance(value, str):
        return unstorable_text(value)
    if isinstance(value, dict):
        for key, item in value.items():
            found = unstorable_text(key) or _unstorable(item)
            if found:
                return found
    if isinstance(value, list):
        for item in value:
            found = _unstorable(item)
            if found:
                return found
    return None


async def parse_body(request: Request, model: type[M]) -> M:
    """Parse the request body as JSON (empty = ``{}``) and validate it, or raise InvalidInput (400)."""
    raw = await request.body()
    try:
        data = json.loads(raw, parse_constant=_reject_constant) if raw.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInput("invalid json", [{"msg": str(error)}]) from error
    if not isinstance(data, dict):
        raise InvalidInput(f"invalid {model.__name__}: body must be a JSON object", [{"msg": "not an object"}])
    bad = _unstorable(data)
    if bad is not None:
        raise InvalidInput(f"invalid json: {bad}", [{"msg": bad}])
    try:
        return model.model_validate(data)
    except ValidationError as error:
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        summary = "; ".join(f"{'.'.join(str(p) for p in d['loc']) or 'body'}: {d['msg']}" for d in details)
        raise InvalidInput(f"invalid {model.__name__}: {summary}", details) from error


GateKey = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9:_-]{0,127}$")]
ReplyOrigin = Literal["manual", "api-shim", "webhook", "webhook-ci", "external", "unknown"]


class GateReplyBody(Strict):
    payload: dict[str, Any]
    dedupeKey: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    origin: ReplyOrigin


class ExternalEventBody(Strict):
    workflowId: NonEmpty
    gateKey: GateKey
    topic: Annotated[str, StringConstraints(pattern=r"^(human|sys):[a-z0-9][a-z0-9:_-]{0,127}$", max_length=132)]
    payload: dict[str, Any]
    dedupeKey: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    origin: Literal["manual", "engine-dbos", "api-shim", "webhook", "webhook-ci", "external", "unknown"]


class RunEventBody(Strict):
    type: NonEmpty
    payload: dict[str, Any]
    gateKey: GateKey | None = None
