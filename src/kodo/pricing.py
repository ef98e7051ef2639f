"""The per-model price table: USD per million tokens, input, output and cached input.

``KODO_MODEL_PRICES`` (a JSON object ``{"<model>": {"input": n, "output": n, "cached": n}}``) is laid over
:data:`DEFAULT_PRICES`, so a deployment adds or corrects a model without restating the rest. A model is
looked up by its name as the provider reports it, then without a ``provider/`` prefix. Prices change: the
shipped defaults are list prices at the time of writing, and a deployment that bills by them should pin its
own. ``kodo-fake`` is the shipped fake model's, so demos and tests have a non-zero cost.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

MILLION = Decimal(1_000_000)
QUANTUM = Decimal("0.00000001")  # the ledger's numeric(18, 8)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens."""

    input: Decimal
    output: Decimal
    cached: Decimal

    def cost(self, *, input_tokens: int, output_tokens: int, cached_tokens: int) -> Decimal:
        """The cost of one call; cached tokens are part of the input tokens and priced at ``cached``."""
        cached = min(cached_tokens, input_tokens)
        total = (Decimal(input_tokens - cached) * self.input + Decimal(cached) * self.cached) + Decimal(
            output_tokens
        ) * self.output
        return (total / MILLION).quantize(QUANTUM, rounding=ROUND_CEILING)


def _price(input_usd: str, output_usd: str, cached_usd: str) -> ModelPrice:
    return ModelPrice(Decimal(input_usd), Decimal(output_usd), Decimal(cached_usd))


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-4o": _price("2.50", "10.00", "1.25"),
    "gpt-4o-mini": _price("0.15", "0.60", "0.075"),
    "gpt-4.1": _price("2.00", "8.00", "0.50"),
    "gpt-4.1-mini": _price("0.40", "1.60", "0.10"),
    "gpt-4.1-nano": _price("0.10", "0.40", "0.025"),
    "o3-mini": _price("1.10", "4.40", "0.55"),
    "o4-mini": _price("1.10", "4.40", "0.275"),
    "claude-sonnet-4": _price("3.00", "15.00", "0.30"),
    "claude-opus-4": _price("15.00", "75.00", "1.50"),
    "claude-3-5-haiku": _price("0.80", "4.00", "0.08"),
    "kodo-fake": _price("1.00", "2.00", "0.10"),
}


@functools.lru_cache(maxsize=16)
def parse(text: str | None) -> dict[str, ModelPrice]:
    """``KODO_MODEL_PRICES`` as a table laid over the defaults (parsed once per value: do not change the
    dictionary it returns); a malformed value raises ValueError."""
    table = dict(DEFAULT_PRICES)
    if not text or not text.strip():
        return table
    try:
        given: Any = json.loads(text)
    except ValueError as error:
        raise ValueError(f"not JSON: {error}") from error
    if not isinstance(given, dict):
        raise ValueError('want a JSON object {"<model>": {"input": n, "output": n, "cached": n}}')
    for model, price in given.items():
        if not isinstance(price, dict) or set(price) - {"input", "output", "cached"} or not model.strip():
            raise ValueError(f"{model!r}: want {{input, output[, cached]}} in USD per million tokens")
        numbers = {key: price.get(key) for key in ("input", "output", "cached")}
        for key, value in numbers.items():
            if key == "cached" and value is None:
                continue
            if not _non_negative(value):
                raise ValueError(f"{model!r}.{key}: want a number >= 0 (got {value!r})")
        cached = numbers["cached"] if numbers["cached"] is not None else numbers["input"]
        table[model] = ModelPrice(Decimal(str(numbers["input"])), Decimal(str(numbers["output"])), Decimal(str(cached)))
    return table


def _non_negative(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def lookup(table: dict[str, ModelPrice], model: str | None) -> ModelPrice | None:
    """The price of ``model`` (as reported, then without its ``provider/`` prefix), or None."""
    if not model:
        return None
    return table.get(model) or table.get(model.rsplit("/", 1)[-1])
