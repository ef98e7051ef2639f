"""The price table (KODO_MODEL_PRICES over the shipped defaults) and how usage becomes cost."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from kodo import pricing
from kodo.adapters.agent import BUILD_SCHEMA, AgentRequest, Usage
from kodo.adapters.agent.openai import usage_of
from kodo.adapters.agent.replay import ReplayAgent
from kodo.errors import ConfigurationError
from kodo.settings import load_settings


def test_cost_prices_input_output_and_cached_tokens_per_million() -> None:
    """Cached tokens are part of the input and priced at the cached rate; costs round up to 1e-8 USD."""
    price = pricing.DEFAULT_PRICES["gpt-4o"]  # 2.50 in, 10.00 out, 1.25 cached
    assert price.cost(input_tokens=1_000_000, output_tokens=0, cached_tokens=0) == Decimal("2.5")
    assert price.cost(input_tokens=1000, output_tokens=100, cached_tokens=400) == Decimal("0.0030")
    assert price.cost(input_tokens=1, output_tokens=0, cached_tokens=0) == Decimal("0.0000025")
    assert pricing.DEFAULT_PRICES["kodo-fake"].cost(input_tokens=3, output_tokens=0, cached_tokens=0) == Decimal(
        "0.00000300"
    )


def test_overrides_lie_over_the_defaults_and_lookup_drops_a_provider_prefix() -> None:
    """KODO_MODEL_PRICES adds and corrects models; 'openai/gpt-4o' finds 'gpt-4o'; cached defaults to input."""
    table = pricing.parse(json.dumps({"my-model": {"input": 1, "output": 3}, "gpt-4o": {"input": 9, "output": 9}}))
    assert table["my-model"] == pricing.ModelPrice(Decimal(1), Decimal(3), Decimal(1))
    assert pricing.lookup(table, "openai/gpt-4o") == pricing.ModelPrice(Decimal(9), Decimal(9), Decimal(9))
    assert pricing.lookup(table, "gpt-4o-mini") == pricing.DEFAULT_PRICES["gpt-4o-mini"]
    assert pricing.lookup(table, "nobody-prices-me") is None and pricing.lookup(table, None) is None


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        "[]",
        '{"m": 1}',
        '{"m": {"input": -1, "output": 1}}',
        '{"m": {"input": "1", "output": 1}}',
        '{"m": {"input": 1}}',
        '{"m": {"input": 1, "output": 1, "extra": 2}}',
        '{"m": {"input": true, "output": 1}}',
        '{" ": {"input": 1, "output": 1}}',
    ],
)
def test_a_malformed_price_table_stops_start_up_naming_the_variable(value: str) -> None:
    """A bad KODO_MODEL_PRICES is a ConfigurationError that names it."""
    with pytest.raises(ConfigurationError, match="KODO_MODEL_PRICES"):
        load_settings({"KODO_MODEL_PRICES": value})


def test_openai_usage_object_becomes_usage() -> None:
    """prompt/completion tokens and prompt_tokens_details.cached_tokens; junk counts as zero."""
    usage = usage_of(
        {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 30}}, "m"
    )
    assert usage == Usage(model="m", input_tokens=100, output_tokens=20, cached_tokens=30)
    assert usage_of(None, "m") == Usage(model="m")
    assert usage_of({"prompt_tokens": "x", "completion_tokens": -3}, "m") == Usage(model="m")


def test_replay_carries_the_recorded_usage_of_a_fixture(tmp_path: Path) -> None:
    """A fixture's .usage.json sidecar is reported by the replayed call; without one there is no usage."""
    agent = ReplayAgent(tmp_path)
    request = AgentRequest(
        run_id="r", step_id="DecideST", attempt=1, agent="build", prompt="p", schema=BUILD_SCHEMA, context={}
    )
    assert agent.structured(request).usage is None
    path = agent.fixture_path(request)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"patch": [], "tests": [], "test_command": "echo"}))
    recorded = Usage(model="gpt-4o", input_tokens=900, output_tokens=80, cached_tokens=0)
    path.with_suffix(".usage.json").write_text(json.dumps(recorded.as_json()))
    assert agent.structured(request).usage == recorded
