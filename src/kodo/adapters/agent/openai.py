"""``OC_PROVIDER=openai``: any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp, Ollama).

One ``POST {OPENAI_BASE_URL}/chat/completions`` per structured call, with
``response_format: {type: "json_schema", json_schema: {name, schema, strict: true}}``. Strict JSON
schema mode needs every property listed as required, so optional properties are sent as nullable
and a ``null`` answer for one of them is dropped again. The answer must be a JSON object with the
schema's required keys. No retries here: the workflow step owns retries.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import httpx

from kodo.adapters.agent import AgentRequest, AgentResult, Usage
from kodo.adapters.agent.policy import (
    AgentUnavailable,
    StructuredOutputFailure,
    live_or_fallback,
    require_keys,
)
from kodo.adapters.agent.prompting import system_prompt, user_prompt

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_UNSUPPORTED_IN_STRICT = ("minLength", "maxLength")


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` as OpenAI's strict mode wants it: every property required, optional ones nullable."""
    out = copy.deepcopy(schema)
    _strict(out)
    return out


def _strict(node: dict[str, Any]) -> None:
    for key in _UNSUPPORTED_IN_STRICT:
        node.pop(key, None)
    if node.get("type") == "object" and isinstance(node.get("properties"), dict):
        required = set(node.get("required", []))
        for name, prop in node["properties"].items():
            _strict(prop)
            if name not in required:
                kind = prop.get("type")
                if isinstance(kind, str):
                    prop["type"] = [kind, "null"]
                else:
                    node["properties"][name] = {"anyOf": [prop, {"type": "null"}]}
        node["required"] = list(node["properties"])
        node["additionalProperties"] = False
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        _strict(node["items"])


def drop_optional_nulls(value: Any, schema: dict[str, Any]) -> Any:
    """Undo ``strict_schema`` on an answer: remove ``null`` values of properties that were optional."""
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        required = set(schema.get("required", []))
        props = schema["properties"]
        return {
            key: drop_optional_nulls(item, props.get(key, {}))
            for key, item in value.items()
            if not (item is None and key not in required)
        }
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [drop_optional_nulls(item, schema["items"]) for item in value]
    return value


def usage_of(usage: Any, model: str) -> Usage:
    """The chat-completions ``usage`` object as kodo's Usage: prompt tokens include the cached ones."""
    body = usage if isinstance(usage, dict) else {}
    details = body.get("prompt_tokens_details")
    cached = details.get("cached_tokens", 0) if isinstance(details, dict) else 0

    def count(value: Any) -> int:
        return value if isinstance(value, int) and value > 0 else 0

    return Usage(
        model=model,
        input_tokens=count(body.get("prompt_tokens")),
        output_tokens=count(body.get("completion_tokens")),
        cached_tokens=count(cached),
    )


class OpenAICompatibleAgent:
    """A structured-output client for one model behind an OpenAI-compatible endpoint."""

    mode = "live"
    provider = "openai"

    def __init__(
        self,
        base_url: str | None,
        *,
        model: str,
        api_key: str | None = None,
        timeout_ms: int = 300_000,
        strict: bool = False,
        transport: httpx.BaseTransport | None = None,
        max_output_tokens: int | None = None,
    ) -> None:
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.model = model
        self.max_output_tokens = max_output_tokens
        self.strict = strict
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_ms / 1000, connect=10.0),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def structured(self, request: AgentRequest) -> AgentResult:
        return live_or_fallback(request, self._call, strict=self.strict, provider=self.provider)

    def body(self, request: AgentRequest) -> dict[str, Any]:
        """The chat-completions request for one structured call (``max_tokens``: the reservation's ceiling)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system_prompt(request.agent)},
                {"role": "user", "content": user_prompt(request)},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": f"kodo_{request.agent}",
                    "schema": strict_schema(request.schema),
                    "strict": True,
                },
            },
        }
        if self.max_output_tokens:
            body["max_tokens"] = self.max_output_tokens
        return body

    def _call(self, request: AgentRequest) -> AgentResult:
        started = time.monotonic()
        response = self._http.post(f"{self.base_url}/chat/completions", json=self.body(request))
        if response.status_code != 200:
            raise AgentUnavailable(
                f"oc_live_unavailable:{request.step_id}:HTTP {response.status_code} from {self.base_url}: "
                f"{response.text[:300]}"
            )
        try:
            payload = response.json()
            choice = payload["choices"][0]
            message = choice["message"]
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise AgentUnavailable(
                f"oc_live_unavailable:{request.step_id}: not a chat completion: {response.text[:300]}"
            ) from error
        if message.get("refusal"):
            raise StructuredOutputFailure(f"the model refused: {message['refusal']}")
        if choice.get("finish_reason") == "length":
            raise StructuredOutputFailure("the answer was cut off at the token limit")
        content = message.get("content")
        try:
            answer = json.loads(content) if isinstance(content, str) else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise StructuredOutputFailure(f"the answer is not a JSON object: {str(content)[:200]!r}")
        structured = require_keys(drop_optional_nulls(answer, request.schema), request.schema, request.step_id)
        return AgentResult(
            structured=structured,
            mode=self.mode,
            usage=usage_of(payload.get("usage"), str(payload.get("model") or self.model)),
            duration_ms=int((time.monotonic() - started) * 1000),
            raw={
                "provider": self.provider,
                "model": payload.get("model", self.model),
                "id": payload.get("id"),
                "finish": choice.get("finish_reason"),
                "usage": payload.get("usage"),
            },
        )
