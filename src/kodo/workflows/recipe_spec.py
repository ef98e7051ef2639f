"""The recipe contract: ``RecipeSpec`` (one version), ``RecipeBundle`` (an import/export unit), eval checks.

Strict pydantic models (unknown fields are 400s). A version's content address is
``sha256(canonical(spec.normalized()))``; export returns exactly the normalized specs, so an exported
bundle imports back to the same hashes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

NonEmpty = Annotated[str, StringConstraints(min_length=1)]
RecipeId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
RecipeV = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")]
CheckId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
PositiveInt = Annotated[int, Field(ge=1)]
QueueName = Literal["compileQ", "sbxQ", "controlQ", "intentQ"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class FileExistsCheck(_Strict):
    """Passes when an artifact URI (``artifact://…`` glob) or a workspace path (relative glob) exists."""

    kind: Literal["file_exists"]
    id: CheckId
    glob: NonEmpty


class JsonSchemaCheck(_Strict):
    """Passes when every matching artifact is JSON that conforms to ``schema``."""

    kind: Literal["jsonschema"]
    id: CheckId
    artifact: NonEmpty
    schema_: dict[str, Any] = Field(alias="schema")


class RowcountGteCheck(_Strict):
    """Passes when the matching artifacts hold at least ``n`` rows (array items or non-empty lines)."""

    kind: Literal["rowcount_gte"]
    id: CheckId
    artifact: NonEmpty
    n: Annotated[int, Field(ge=0)]


class RegexCheck(_Strict):
    """Passes when ``re`` matches (``re.search``, multiline) in every matching artifact."""

    kind: Literal["regex"]
    id: CheckId
    artifact: NonEmpty
    re: NonEmpty

    @field_validator("re")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"bad regular expression: {error}") from error
        return value


class DiffLeCheck(_Strict):
    """Passes when artifacts A and B differ in at most ``max`` lines."""

    kind: Literal["diff_le"]
    id: CheckId
    artifactA: NonEmpty
    artifactB: NonEmpty
    max: Annotated[int, Field(ge=0)]


EvalCheck = Annotated[
    FileExistsCheck | JsonSchemaCheck | RowcountGteCheck | RegexCheck | DiffLeCheck, Field(discriminator="kind")
]


class Limits(_Strict):
    maxSteps: PositiveInt
    maxFanout: PositiveInt
    maxSbxMin: PositiveInt
    maxTokens: PositiveInt  # stored, not enforced (docs/budgets.md: a run's maxTokens is its budget's)
    # The default of a run's budget.maxCostUsd when its start gives none (docs/budgets.md).
    maxCostUsd: Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)] | None = None


class Fixture(_Strict):
    id: CheckId
    formData: dict[str, Any]


class Prompts(_Strict):
    compile: NonEmpty
    postmortem: NonEmpty


class SandboxSpec(_Strict):
    """The sandbox a version needs: its environment and dependency pins (their hash keys its template)."""

    envRef: NonEmpty
    deps: list[NonEmpty] = Field(default_factory=list)


class RecipeSpec(_Strict):
    id: RecipeId
    v: RecipeV
    name: NonEmpty
    tags: list[NonEmpty] | None = None
    formSchema: dict[str, Any]
    intentTmpl: dict[str, Any]
    wfEntry: Literal["RunIntent"]
    queue: QueueName
    limits: Limits
    eval: list[EvalCheck]
    fixtures: list[Fixture]
    prompts: Prompts | None = None
    autoApprove: bool | None = None
    sandbox: SandboxSpec | None = None

    def normalized(self) -> dict[str, Any]:
        """The stored (and hashed, and exported) form: JSON types, aliases, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class RecipeBundle(_Strict):
    id: NonEmpty
    versions: Annotated[list[RecipeSpec], Field(min_length=1)]


class RecipeExportRequest(_Strict):
    id: NonEmpty
