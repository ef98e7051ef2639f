"""kodo's fake OpenAI-compatible model server: it speaks the wire format and answers by the producer rules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kodo.adapters.agent import BUILD_SCHEMA, PLAN_SCHEMA
from kodo.adapters.agent.fake_model import MODEL_ID, FakeModelServer, minimal_instance

CONTEXT = '<kodo-context>{"intent": {"goal": "ask me", "constraints": {}}, "workload": {"steps": 2}}</kodo-context>'


@pytest.fixture
def fake() -> Iterator[FakeModelServer]:
    with FakeModelServer() as server:
        yield server


def chat(fake: FakeModelServer, text: str, **body: Any) -> httpx.Response:
    payload = {"model": MODEL_ID, "messages": [{"role": "user", "content": text}], **body}
    return httpx.post(f"{fake.base_url}/chat/completions", json=payload, timeout=10)


def test_models_lists_the_fake_model(fake: FakeModelServer) -> None:
    """GET /v1/models names the one model."""
    assert httpx.get(f"{fake.base_url}/models", timeout=5).json()["data"][0]["id"] == MODEL_ID


def test_json_schema_answer_follows_the_producer(fake: FakeModelServer) -> None:
    """response_format json_schema → JSON content by the producer's rules for the context block."""
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": PLAN_SCHEMA, "strict": True}}
    answer = json.loads(chat(fake, "Plan.\n" + CONTEXT, response_format=fmt).json()["choices"][0]["message"]["content"])
    assert answer["tests"] == ["test0", "test1"] and "question" in answer


def test_structured_output_tool_is_called_in_stream_chunks(fake: FakeModelServer) -> None:
    """With a StructuredOutput tool and stream:true the answer is SSE chunks of one tool call, then [DONE]."""
    tool = {"type": "function", "function": {"name": "StructuredOutput", "parameters": BUILD_SCHEMA}}
    response = chat(fake, "Build.\n" + CONTEXT, tools=[tool], tool_choice="required", stream=True)
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    calls = [d for c in chunks for ch in c["choices"] for d in ch["delta"].get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "StructuredOutput"
    arguments = json.loads("".join(c["function"].get("arguments", "") for c in calls))
    assert arguments == {"patch": [], "tests": [], "test_command": "echo"}
    assert any(ch.get("finish_reason") == "tool_calls" for c in chunks for ch in c["choices"])
    assert chunks[-1]["usage"]["prompt_tokens"] > 0


def test_directives_script_failures(fake: FakeModelServer) -> None:
    """kodo-fake: status=503 fails the request; no-structured answers prose."""
    assert chat(fake, "kodo-fake: status=503").status_code == 503
    tool = {"type": "function", "function": {"name": "StructuredOutput", "parameters": PLAN_SCHEMA}}
    message = chat(fake, "kodo-fake: no-structured", tools=[tool]).json()["choices"][0]["message"]
    assert "tool_calls" not in message and "JSON" in message["content"]


def test_other_schemas_get_a_minimal_instance() -> None:
    """A schema that is neither plan nor build is answered with its required keys, empty."""
    schema = {"type": "object", "required": ["a", "b"], "properties": {"a": {"type": "string"}, "b": {"type": "array"}}}
    assert minimal_instance(schema) == {"a": "", "b": []}


def test_usage_directive_scripts_the_reported_usage(fake: FakeModelServer) -> None:
    """kodo-fake: usage=<in>x<out> sets the usage of plain and streamed answers; else 11 in, 7 out."""
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": PLAN_SCHEMA, "strict": True}}
    scripted = chat(fake, "Plan.\nkodo-fake: usage=1200x340\n" + CONTEXT, response_format=fmt).json()["usage"]
    assert (scripted["prompt_tokens"], scripted["completion_tokens"], scripted["total_tokens"]) == (1200, 340, 1540)
    plain = chat(fake, "Plan.\n" + CONTEXT, response_format=fmt).json()["usage"]
    assert (plain["prompt_tokens"], plain["completion_tokens"]) == (11, 7)
    tool = {"type": "function", "function": {"name": "StructuredOutput", "parameters": BUILD_SCHEMA}}
    streamed = chat(fake, "Build.\nkodo-fake: usage=5x6\n" + CONTEXT, tools=[tool], stream=True)
    last = json.loads([line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")][-2])
    assert (last["usage"]["prompt_tokens"], last["usage"]["completion_tokens"]) == (5, 6)
