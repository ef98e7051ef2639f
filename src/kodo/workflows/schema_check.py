"""A small, strict JSON Schema subset: recipe form schemas and ``jsonschema`` eval checks.

Supported keywords: ``type`` (a name or a list of names), ``enum``, ``const``, ``required``,
``properties``, ``additionalProperties`` (bool or schema), ``items``, ``minItems``, ``maxItems``,
``minLength``, ``maxLength``, ``pattern``, ``minimum``, ``maximum``; annotations ``title``,
``description``, ``default``, ``examples``, ``$schema`` are ignored. Any other keyword is refused when a
recipe is imported (``unsupported_keywords``), so a recipe never relies on a rule kodo does not check.
"""

from __future__ import annotations

import re
from typing import Any

_TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}
_RULES = {
    "type",
    "enum",
    "const",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
}
_ANNOTATIONS = {"title", "description", "default", "examples", "$schema"}


def unsupported_keywords(schema: Any, path: str = "$") -> list[str]:
    """Every problem with a schema itself: unknown keywords, unknown type names, bad patterns."""
    if not isinstance(schema, dict):
        return [f"{path}: a schema must be an object"]
    problems = [f"{path}: unsupported keyword {key!r}" for key in schema if key not in _RULES | _ANNOTATIONS]
    kinds = schema.get("type")
    names = kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []
    problems += [f"{path}: unknown type {name!r}" for name in names if name not in _TYPES]
    if "pattern" in schema:
        try:
            re.compile(str(schema["pattern"]))
        except re.error as error:
            problems.append(f"{path}: bad pattern: {error}")
    for name, sub in (schema.get("properties") or {}).items():
        problems += unsupported_keywords(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            problems += unsupported_keywords(schema[key], f"{path}.{key}")
    return problems


def _is(kind: str, value: Any) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return {
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "null": value is None,
    }[kind]


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema`` (an empty list means it conforms)."""
    errors: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        names = kinds if isinstance(kinds, list) else [kinds]
        if not any(_is(name, value) for name in names):
            return [f"{path}: expected {' or '.join(names)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: must be one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: must be {schema['const']!r}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']}")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            errors.append(f"{path}: does not match {schema['pattern']!r}")
    if _is("number", value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: above the maximum {schema['maximum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                errors += validate(item, schema["items"], f"{path}[{index}]")
    if isinstance(value, dict):
        properties: dict[str, Any] = schema.get("properties") or {}
        errors += [f"{path}.{name}: is required" for name in schema.get("required", []) if name not in value]
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                errors += validate(item, properties[name], f"{path}.{name}")
            elif extra is False:
                errors.append(f"{path}.{name}: unknown field")
            elif isinstance(extra, dict):
                errors += validate(item, extra, f"{path}.{name}")
    return errors
