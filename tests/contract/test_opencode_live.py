"""OpenCodeAgent against the real ``opencode serve`` binary (1.18.x) and kodo's fake model: the failure paths.

The fake model is scripted through ``kodo-fake:`` lines in the prompt (see ``fake_model``), so each
case below is the real server's own behaviour, not a mock of it.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from kodo.adapters.agent import BUILD_SCHEMA, PLAN_SCHEMA, AgentRequest
from kodo.adapters.agent.fake_model import FakeModelServer
from kodo.adapters.agent.opencode import OpenCodeAgent
from kodo.adapters.agent.opencode_server import OpenCodeServer
from kodo.adapters.agent.policy import StructuredOutputFailure, ToolDenied
from kodo.adapters.agent.prompting import CONCISE_SUFFIX
from live_servers import PASSWORD


def request(prompt: str, agent: str = "plan") -> AgentRequest:
    return AgentRequest(
        run_id="run_" + secrets.token_hex(6),
        step_id="CompileST" if agent == "plan" else "DecideST",
        attempt=1,
        agent=agent,
        prompt=prompt,
        schema=PLAN_SCHEMA if agent == "plan" else BUILD_SCHEMA,
        context={"intent": {"goal": "fix it", "constraints": {"testCommand": "make test"}}, "plan": {"tests": []}},
    )


def client(server: OpenCodeServer, **options: Any) -> OpenCodeAgent:
    return OpenCodeAgent(server.base_url, password=PASSWORD, strict=True, **{"timeout_ms": 60_000, **options})


def test_health_reports_the_pinned_version(opencode_server: OpenCodeServer) -> None:
    """GET /global/health on the real server is healthy and 1.18.x (what kodo pins)."""
    assert client(opencode_server).health()["version"].startswith("1.18.")


def test_build_answer_comes_from_the_real_server(opencode_server: OpenCodeServer) -> None:
    """A build call is answered through OpenCode's StructuredOutput tool with the producer's rules."""
    result = client(opencode_server).structured(request("Generate patches and test command.", "build"))
    assert result.structured == {"patch": [], "tests": [], "test_command": "make test"}
    assert result.session_id and result.session_id.startswith("ses_")
    assert result.raw is not None and result.raw["serverVersion"].startswith("1.18.")
    assert {"tool": "StructuredOutput", "status": "completed"} in result.tool_calls


def test_allowed_tool_then_answer(opencode_server: OpenCodeServer) -> None:
    """The plan agent may read first (a real tool step), then answer; both steps' tokens are summed."""
    result = client(opencode_server).structured(request("Plan it.\nkodo-fake: tool=read"))
    assert [c["tool"] for c in result.tool_calls][-1] == "read"
    assert result.raw is not None and result.raw["tokens"]["input"] == 22


def test_tool_outside_the_allowlist_is_denied(opencode_server: OpenCodeServer) -> None:
    """The model calling bash in a plan turn (switched off, so OpenCode files it as invalid) → tool-denied."""
    with pytest.raises(ToolDenied, match=r"^tool-denied: bash for agent plan$"):
        client(opencode_server).structured(request("Plan it.\nkodo-fake: tool=bash"))


def test_structured_output_error_arrives_as_http_200(opencode_server: OpenCodeServer) -> None:
    """A model that answers in prose → OpenCode's StructuredOutputError (HTTP 200 + info.error) is raised."""
    with pytest.raises(StructuredOutputFailure, match="Model did not produce structured output"):
        client(opencode_server).structured(request("Plan it.\nkodo-fake: no-structured"))


def test_stall_then_tightened_retry_succeeds(opencode_server: OpenCodeServer, fake_model: FakeModelServer) -> None:
    """A turn with no answer within OC_TIMEOUT_MS is aborted; the retry carries the concise suffix and answers."""
    before = len(fake_model.completions())
    result = client(opencode_server, timeout_ms=5000).structured(
        request("Plan it.\nkodo-fake: sleep-unless-concise=15000")
    )
    assert result.raw is not None and result.raw["stallRetry"] is True
    assert result.structured["design"] == ["Design for: fix it"]
    texts = [str(m.get("content")) for body in fake_model.completions()[before:] for m in body["messages"]]
    assert any(CONCISE_SUFFIX in text for text in texts)


def test_usage_and_model_come_from_the_turns_step_finish_parts(opencode_server: OpenCodeServer) -> None:
    """The model's reported usage reaches kodo through OpenCode: tokens from step-finish, the model's id."""
    result = client(opencode_server).structured(request("Plan it.\nkodo-fake: usage=1000x500"))
    assert result.usage is not None
    assert (result.usage.model, result.usage.input_tokens, result.usage.output_tokens) == ("kodo-fake", 1000, 500)
