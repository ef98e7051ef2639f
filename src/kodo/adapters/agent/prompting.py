"""What every live agent sends: the step's prompt, then the request's context as one JSON block.

The context block (``<kodo-context>{…}</kodo-context>``) gives a real model the structured intent
(goal, inputs, constraints, workload, the approved plan) next to the prose prompt, and lets kodo's
fake model server answer by the deterministic producer's rules (``fake_model``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from kodo.adapters.agent import AgentRequest

CONTEXT_OPEN = "<kodo-context>"
CONTEXT_CLOSE = "</kodo-context>"
_CONTEXT = re.compile(re.escape(CONTEXT_OPEN) + r"(.*?)" + re.escape(CONTEXT_CLOSE), re.DOTALL)

CONCISE_SUFFIX = "IMPORTANT: Be more concise and tighten scope to avoid timeout."


def system_prompt(agent: str) -> str:
    role = "plans the work; it reads and never edits" if agent == "plan" else "decides patches and the test command"
    return (
        f"You are kodo's {agent} agent: it {role}. Answer with one JSON object that matches the given "
        "JSON schema exactly: no prose, no markdown fences."
    )


def user_prompt(request: AgentRequest, *, concise: bool = False) -> str:
    """The prompt text, the context block, and on a stall retry the tightening suffix."""
    context = json.dumps(request.context, sort_keys=True, ensure_ascii=False, default=str)
    text = f"{request.prompt}\n\n{CONTEXT_OPEN}{context}{CONTEXT_CLOSE}"
    return f"{text}\n\n{CONCISE_SUFFIX}" if concise else text


def extract_context(text: str) -> dict[str, Any] | None:
    """The last context block in ``text``, or None when there is none (or it is not a JSON object)."""
    found = _CONTEXT.findall(text)
    if not found:
        return None
    try:
        value = json.loads(found[-1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def missing_keys(structured: Any, schema: dict[str, Any]) -> list[str] | None:
    """Required keys of ``schema`` absent from ``structured``; None when it is not an object at all."""
    if not isinstance(structured, dict):
        return None
    return [key for key in schema.get("required", []) if key not in structured]
