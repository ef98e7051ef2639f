"""Agent errors and the policies every live agent enforces (reference §8).

* **Tool allowlist per agent** — plan: ``read, grep, glob, ls, skill``; build: plan + ``edit, write,
  bash, patch``. Exact, case-sensitive names; OpenCode 1.18's ``list`` and ``apply_patch`` count as
  ``ls`` and ``patch``. ``StructuredOutput`` (the structured-answer tool) is always allowed. A call
  outside the list → ``tool-denied: <name> for agent <agent>``.
* **Child-session ban** — a key anywhere in the request's context that normalises (lower case,
  letters and digits only) to ``parentid`` or ``parentsessionid`` → ``child_session_denied``.
* **Strict mode** — ``OC_STRICT_MODE``: a live failure raises. Otherwise the deterministic producer
  answers and the result's ``raw`` says so (``fallback: "producer"``). Policy violations always raise.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from kodo.adapters.agent import AgentRequest, AgentResult
from kodo.adapters.agent.replay import produce
from kodo.errors import StepFailure

PLAN_TOOLS = frozenset({"read", "grep", "glob", "ls", "skill"})
BUILD_TOOLS = PLAN_TOOLS | {"edit", "write", "bash", "patch"}
ALWAYS_ALLOWED = frozenset({"StructuredOutput"})
TOOL_ALIASES = {"list": "ls", "apply_patch": "patch"}
_BANNED_KEYS = {"parentid", "parentsessionid"}


class AgentError(StepFailure):
    """A live agent call failed; ``code`` says how."""


class ToolDenied(AgentError):
    """The agent called a tool outside its allowlist."""

    def __init__(self, tool: str, agent: str) -> None:
        super().__init__("tool_denied", f"tool-denied: {tool} for agent {agent}")
        self.tool = tool


class ChildSessionDenied(AgentError):
    """The request would make a child session."""

    def __init__(self, path: str) -> None:
        super().__init__("child_session_denied", f"child_session_denied: input key {path} names a parent session")


class StructuredOutputFailure(AgentError):
    """The model ended its turn without a structured answer."""

    def __init__(self, message: str) -> None:
        super().__init__("oc_structured_output_error", f"StructuredOutputError: {message}")


class AgentTimeout(AgentError):
    """No answer in time, twice: the stall retry did not help."""

    def __init__(self, step_id: str) -> None:
        super().__init__("oc_timeout_terminal", f"oc_timeout_terminal: Terminal timeout after retry for {step_id}")


class AgentUnavailable(AgentError):
    """The agent server or model failed (transport, HTTP status, provider error, orphaned turn)."""

    def __init__(self, message: str) -> None:
        super().__init__("oc_live_unavailable", message)


class AgentOutputInvalid(AgentError):
    """The answer is not an object with the schema's required keys."""

    def __init__(self, message: str) -> None:
        super().__init__("AGENT_OUTPUT_INVALID", message)


POLICY_ERRORS = (ToolDenied, ChildSessionDenied)


def allowed_tools(agent: str) -> frozenset[str]:
    return BUILD_TOOLS if agent == "build" else PLAN_TOOLS


def tool_allowed(tool: str, agent: str) -> bool:
    return tool in ALWAYS_ALLOWED or TOOL_ALIASES.get(tool, tool) in allowed_tools(agent)


def check_tools(names: list[str], agent: str) -> None:
    """Raise ToolDenied for the first tool name outside the agent's allowlist."""
    for name in names:
        if not tool_allowed(name, agent):
            raise ToolDenied(name, agent)


def _normal(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def check_child_session(value: Any, path: str = "context") -> None:
    """Raise ChildSessionDenied if any key under ``value`` normalises to parentid/parentsessionid."""
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}"
            if _normal(str(key)) in _BANNED_KEYS:
                raise ChildSessionDenied(where)
            check_child_session(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_child_session(item, f"{path}[{index}]")


def require_keys(structured: Any, schema: dict[str, Any], step_id: str) -> dict[str, Any]:
    """The answer, if it is an object holding every required key of the schema."""
    if not isinstance(structured, dict):
        raise AgentOutputInvalid(f"{step_id}: the answer is not a JSON object")
    missing = [key for key in schema.get("required", []) if key not in structured]
    if missing:
        raise AgentOutputInvalid(f"{step_id}: the answer lacks required keys {missing}")
    return structured


def live_or_fallback(
    request: AgentRequest,
    call: Callable[[AgentRequest], AgentResult],
    *,
    strict: bool,
    provider: str,
) -> AgentResult:
    """Run ``call``; on a live failure raise (strict) or answer from the producer and say so."""
    check_child_session(request.context)
    started = time.monotonic()
    try:
        return call(request)
    except POLICY_ERRORS:
        raise
    except AgentError as error:
        if strict:
            raise
        failure: Exception = error
    except Exception as error:  # transport and protocol failures
        wrapped = AgentUnavailable(f"oc_live_unavailable:{request.step_id}:{type(error).__name__}: {error}")
        if strict:
            raise wrapped from error
        failure = wrapped
    code = failure.code if isinstance(failure, StepFailure) else "oc_live_unavailable"
    return AgentResult(
        structured=produce(request),
        mode="live",
        duration_ms=int((time.monotonic() - started) * 1000),
        raw={"provider": provider, "fallback": "producer", "liveError": str(failure), "errorCode": code},
    )
