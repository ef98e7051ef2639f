"""OpenAPI declarations for routes that parse their own input.

Most routes read the raw request (so a bad body is kodo's 400, never FastAPI's 422). These helpers
describe what those routes accept — the JSON body as its pydantic model's schema, inlined, and the
query parameters — through ``openapi_extra``, so the schema is complete without changing parsing.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with its local ``$defs`` references expanded in place (no components needed)."""
    definitions = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return walk({**copy.deepcopy(definitions[ref.rsplit("/", 1)[-1]]), **rest})
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


def body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` for a JSON request body validated by ``model`` (an empty body is ``{}``)."""
    schema = _inline(model.model_json_schema(mode="validation"))
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


def integer(low: int, high: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


TEXT: dict[str, Any] = {"type": "string", "minLength": 1}
BOOLEAN: dict[str, Any] = {"type": "string", "enum": ["true", "false", "1", "0"]}


def query(*params: tuple[str, dict[str, Any]], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """``openapi_extra`` for query parameters: ``(name, schema)`` pairs; ``required`` names the mandatory ones."""
    return {
        "parameters": [
            {"name": name, "in": "query", "required": name in required, "schema": schema} for name, schema in params
        ]
    }


def both(*parts: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return merged
