"""OpenAICompatibleAgent over httpx.MockTransport: the request it sends and every way an answer fails."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from kodo.adapters.agent import BUILD_SCHEMA, PLAN_SCHEMA, AgentRequest
from kodo.adapters.agent.openai import OpenAICompatibleAgent, drop_optional_nulls, strict_schema
from kodo.adapters.agent.policy import AgentOutputInvalid, AgentUnavailable, StructuredOutputFailure

PLAN = {"goal": "g", "design": ["d"], "files": [], "risks": [], "tests": []}


def request(agent: str = "plan") -> AgentRequest:
    return AgentRequest(
        run_id="run_o",
        step_id="CompileST" if agent == "plan" else "DecideST",
        attempt=1,
        agent=agent,
        prompt="Goal: g",
        schema=PLAN_SCHEMA if agent == "plan" else BUILD_SCHEMA,
        context={"intent": {"goal": "g", "constraints": {}}},
    )


def completion(content: Any, **choice: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": content if isinstance(content, str) else json.dumps(content)}
    return {"id": "c1", "model": "m", "choices": [{"message": message, "finish_reason": "stop", **choice}]}


def agent_for(
    status: int, payload: Any, seen: list[httpx.Request] | None = None, **kwargs: Any
) -> OpenAICompatibleAgent:
    def handle(req: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(req)
        return httpx.Response(status, json=payload)

    options: dict[str, Any] = {"model": "m", "api_key": "sk-test", "strict": True, **kwargs}
    return OpenAICompatibleAgent("http://llm.test/v1/", transport=httpx.MockTransport(handle), **options)


def test_request_is_a_strict_json_schema_chat_completion() -> None:
    """POST {base}/chat/completions with model, system+user messages and response_format json_schema strict."""
    seen: list[httpx.Request] = []
    result = agent_for(200, completion(PLAN), seen).structured(request())
    assert result.structured == PLAN and result.mode == "live"
    (sent,) = seen
    assert str(sent.url) == "http://llm.test/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    body = json.loads(sent.content)
    assert body["model"] == "m" and [m["role"] for m in body["messages"]] == ["system", "user"]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["name"] == "kodo_plan"
    assert set(fmt["json_schema"]["schema"]["required"]) == set(PLAN_SCHEMA["properties"])
    assert "<kodo-context>" in body["messages"][1]["content"]


def test_strict_schema_makes_optional_properties_nullable() -> None:
    """Optional properties become required + nullable; a null answer for them is dropped again."""
    schema = strict_schema(PLAN_SCHEMA)
    assert schema["properties"]["question"]["type"] == ["string", "null"]
    assert schema["properties"]["goal"]["type"] == "string"
    assert "maxLength" not in json.dumps(strict_schema(BUILD_SCHEMA))
    assert PLAN_SCHEMA["properties"]["question"]["type"] == "string"  # the original is untouched
    answer = {**PLAN, "question": None, "patchPlan": None}
    assert drop_optional_nulls(answer, PLAN_SCHEMA) == PLAN


def test_nulls_for_optional_keys_never_reach_the_caller() -> None:
    """An answer with "question": null comes back without the question key."""
    result = agent_for(200, completion({**PLAN, "question": None, "patchPlan": None})).structured(request())
    assert result.structured == PLAN


@pytest.mark.parametrize("status", [400, 401, 429, 500, 503])
def test_http_errors_are_unavailable_and_not_retried(status: int) -> None:
    """A non-200 answer → oc_live_unavailable with the status, after exactly one request (no retries)."""
    seen: list[httpx.Request] = []
    with pytest.raises(AgentUnavailable, match=f"HTTP {status}"):
        agent_for(status, {"error": {"message": "nope"}}, seen).structured(request())
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (completion("not json at all"), "not a JSON object"),
        (completion("[1, 2]"), "not a JSON object"),
        (completion(PLAN, finish_reason="length"), "cut off"),
        ({"choices": [{"message": {"role": "assistant", "content": None, "refusal": "no"}}]}, "refused"),
    ],
)
def test_unusable_answers_are_structured_output_failures(payload: dict[str, Any], match: str) -> None:
    """Prose, a non-object, a truncated answer or a refusal → StructuredOutputFailure."""
    with pytest.raises(StructuredOutputFailure, match=match):
        agent_for(200, payload).structured(request())


def test_missing_required_key_is_invalid_output() -> None:
    """An object without a required key → AGENT_OUTPUT_INVALID."""
    with pytest.raises(AgentOutputInvalid, match="test_command"):
        agent_for(200, completion({"patch": [], "tests": []})).structured(request("build"))


def test_not_a_completion_is_unavailable() -> None:
    """A 200 that is not a chat completion at all → oc_live_unavailable."""
    with pytest.raises(AgentUnavailable, match="not a chat completion"):
        agent_for(200, {"hello": "world"}).structured(request())


def test_non_strict_mode_falls_back_to_the_producer() -> None:
    """Without OC_STRICT_MODE a failed call is answered by the producer and raw says why."""
    result = agent_for(500, {"error": "down"}, strict=False).structured(request())
    assert result.raw is not None and result.raw["fallback"] == "producer"
    assert "HTTP 500" in result.raw["liveError"]
    assert result.structured["design"] == ["Design for: g"]
