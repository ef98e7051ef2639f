"""Strict query strings: an unknown or repeated key, or a value out of range, is a 400 (never FastAPI's 422)."""

from __future__ import annotations

from fastapi import Request

from kodo.errors import InvalidInput


def strict_query(request: Request, allowed: set[str]) -> dict[str, str]:
    """The query as a dict; an unknown or repeated key is a 400."""
    items = request.query_params.multi_items()
    keys = [key for key, _value in items]
    unknown = sorted(set(keys) - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown query parameter(s): {', '.join(unknown)}", [{"loc": ["query", k]} for k in unknown]
        )
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise InvalidInput(f"repeated query parameter(s): {', '.join(repeated)}")
    return dict(items)


def query_int(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.strip().isdecimal() or not low <= int(raw) <= high:
        raise InvalidInput(f"{name} must be an integer between {low} and {high}", [{"loc": ["query", name]}])
    return int(raw)


def query_bool(query: dict[str, str], name: str) -> bool:
    raw = query.get(name, "false").strip().lower()
    if raw not in {"true", "false", "1", "0"}:
        raise InvalidInput(f"{name} must be true or false", [{"loc": ["query", name]}])
    return raw in {"true", "1"}


def query_text(query: dict[str, str], name: str) -> str | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not raw.strip():
        raise InvalidInput(f"{name} must not be empty", [{"loc": ["query", name]}])
    return raw.strip()
