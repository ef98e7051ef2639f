"""The coding agent port: one structured call per step attempt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from kodo.identity import sha256_hex

PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["goal", "design", "files", "risks", "tests"],
    "properties": {
        "goal": {"type": "string"},
        "design": {"type": "array", "items": {"type": "string"}, "maxItems": 25},
        "files": {"type": "array", "items": {"type": "string"}, "maxItems": 30},
        "risks": {"type": "array", "items": {"type": "string"}, "maxItems": 15},
        "tests": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
        "question": {"type": "string"},
        "patchPlan": {
            "type": "array",
            "maxItems": 20,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["targetPath", "postimageContent", "diffText"],
                "properties": {
                    "targetPath": {"type": "string"},
                    "postimageContent": {"type": "string"},
                    "diffText": {"type": "string"},
                },
            },
        },
    },
}

BUILD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["patch", "tests", "test_command"],
    "properties": {
        "patch": {
            "type": "array",
            "maxItems": 30,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["path", "diff"],
                "properties": {"path": {"type": "string"}, "diff": {"type": "string", "maxLength": 20000}},
            },
        },
        "tests": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
        "test_command": {"type": "string"},
    },
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRequest:
    """One structured prompt: who asks (run, step, attempt), which agent, and what for."""

    run_id: str
    step_id: str
    attempt: int
    agent: str  # "plan" | "build"
    prompt: str
    schema: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def schema_hash(self) -> str:
        return sha256_hex(self.schema)

    @property
    def op_key(self) -> str:
        """sha256(<runId>:<stepId>:<attempt>:<schemaHash>:<promptHash>): the ledger and cache key."""
        return sha256_hex(f"{self.run_id}:{self.step_id}:{self.attempt}:{self.schema_hash}:{sha256_hex(self.prompt)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """What one call used, as the provider reported it: tokens, and the provider's own cost if it gives one."""

    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    provider_cost_usd: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "cachedTokens": self.cached_tokens,
            "providerCostUsd": self.provider_cost_usd,
        }

    @classmethod
    def from_json(cls, value: Any) -> Usage | None:
        """The usage written by ``as_json`` (a replay fixture's, or a ledger row's); None if absent or malformed."""
        if not isinstance(value, dict):
            return None
        try:
            cost = value.get("providerCostUsd")
            return cls(
                model=str(value["model"]) if value.get("model") else None,
                input_tokens=max(0, int(value.get("inputTokens", 0) or 0)),
                output_tokens=max(0, int(value.get("outputTokens", 0) or 0)),
                cached_tokens=max(0, int(value.get("cachedTokens", 0) or 0)),
                provider_cost_usd=float(cost) if cost is not None else None,
            )
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentResult:
    structured: dict[str, Any]
    mode: str
    session_id: str | None = None
    duration_ms: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] | None = None
    usage: Usage | None = None


class CodingAgent(Protocol):
    """A coding agent that answers a prompt with JSON matching a schema."""

    mode: str

    def structured(self, request: AgentRequest) -> AgentResult: ...
