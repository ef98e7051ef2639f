"""Queue limits from settings (SPEC §4 Queues, reference §5 and §17); pure, no DBOS launch."""

from __future__ import annotations

from typing import Any

import pytest

from kodo.settings import Settings, load_settings
from kodo.workflows.queues import DEFAULT_PARTITION, partition_for, queue_limits

QUEUES = {"intentQ", "sbxQ", "controlQ", "compileQ", "webhookQ"}


def _settings(**env: str) -> Settings:
    return load_settings(env)


def _rate(limits: dict[str, Any]) -> dict[str, Any]:
    """The rate limiter, whether DBOS applies it per queue or per partition."""
    return limits.get("partition_limiter") or limits["limiter"]


def test_every_queue_has_limits() -> None:
    """All four queues of the spec, and webhookQ (webhook deliveries), get limits, and no others."""
    assert set(queue_limits(_settings())) == QUEUES


def test_partitioned_defaults_are_per_partition() -> None:
    """With partitioning on (default), INTENT_/SBX_QUEUE_* caps apply per partition."""
    limits = queue_limits(_settings())
    intent, sbx = limits["intentQ"], limits["sbxQ"]
    assert intent["partition_concurrency"] == 50
    assert intent["partition_worker_concurrency"] == 5
    assert sbx["partition_concurrency"] == 50
    assert sbx["partition_worker_concurrency"] == 10
    assert "global_concurrency" not in intent
    assert "global_concurrency" not in sbx


def test_partitioned_limits_follow_settings() -> None:
    """Every INTENT_QUEUE_*/SBX_QUEUE_* number reaches its queue."""
    limits = queue_limits(
        _settings(
            INTENT_QUEUE_WORKER_CONCURRENCY="3",
            INTENT_QUEUE_CONCURRENCY="7",
            INTENT_QUEUE_RATE_LIMIT_PER_PERIOD="11",
            INTENT_QUEUE_RATE_LIMIT_PERIOD_SEC="13",
            SBX_QUEUE_WORKER_CONCURRENCY="4",
            SBX_QUEUE_CONCURRENCY="150",
            SBX_QUEUE_RATE_LIMIT_PER_PERIOD="10000",
            SBX_QUEUE_RATE_LIMIT_PERIOD_SEC="61",
        )
    )
    intent, sbx = limits["intentQ"], limits["sbxQ"]
    assert (intent["partition_concurrency"], intent["partition_worker_concurrency"]) == (7, 3)
    assert _rate(intent) == {"limit": 11, "period": 13}
    assert (sbx["partition_concurrency"], sbx["partition_worker_concurrency"]) == (150, 4)
    assert _rate(sbx) == {"limit": 10000, "period": 61}


def test_default_rate_limits() -> None:
    """Both work queues default to 100 per 60 s."""
    limits = queue_limits(_settings())
    assert _rate(limits["intentQ"]) == {"limit": 100, "period": 60}
    assert _rate(limits["sbxQ"]) == {"limit": 100, "period": 60}


def test_unpartitioned_intent_queue_uses_global_limits() -> None:
    """INTENT_QUEUE_PARTITION=false turns intentQ's caps into global/worker limits."""
    limits = queue_limits(
        _settings(INTENT_QUEUE_PARTITION="false", INTENT_QUEUE_CONCURRENCY="20", INTENT_QUEUE_WORKER_CONCURRENCY="2")
    )
    intent = limits["intentQ"]
    assert intent["global_concurrency"] == 20
    assert intent["worker_concurrency"] == 2
    assert not {"partition_concurrency", "partition_worker_concurrency"} & set(intent)
    assert "partition_concurrency" in limits["sbxQ"]


def test_unpartitioned_sbx_queue_uses_global_limits() -> None:
    """SBX_QUEUE_PARTITION=false turns sbxQ's caps into global/worker limits."""
    sbx = queue_limits(_settings(SBX_QUEUE_PARTITION="false"))["sbxQ"]
    assert sbx["global_concurrency"] == 50
    assert sbx["worker_concurrency"] == 10
    assert "partition_concurrency" not in sbx


def test_control_and_compile_queues() -> None:
    """controlQ runs 5 at a time and compileQ 10, as the predecessor's config did."""
    limits = queue_limits(_settings())
    assert limits["controlQ"]["global_concurrency"] == 5
    assert limits["compileQ"]["global_concurrency"] == 10


@pytest.mark.parametrize("interval", ["0.05", "0.25", "1"])
def test_every_queue_polls_at_the_configured_interval(interval: str) -> None:
    """intentQ/sbxQ poll at KODO_QUEUE_POLLING_INTERVAL_SEC; controlQ, compileQ and webhookQ (off every run's
    path) at the control interval."""
    limits = queue_limits(
        _settings(KODO_QUEUE_POLLING_INTERVAL_SEC=interval, KODO_CONTROL_QUEUE_POLLING_INTERVAL_SEC="0.75")
    )
    for name in ("intentQ", "sbxQ"):
        assert limits[name]["polling_interval_sec"] == float(interval), name
    for name in ("controlQ", "compileQ", "webhookQ"):
        assert limits[name]["polling_interval_sec"] == 0.75, name


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"KODO_MAX_EXECUTOR_THREADS": "8"},
        {"KODO_MAX_EXECUTOR_THREADS": "200"},
        {"INTENT_QUEUE_PARTITION": "false", "SBX_QUEUE_PARTITION": "false"},
    ],
)
def test_every_queue_has_a_bounded_worker_concurrency(env: dict[str, str]) -> None:
    """No queue dequeues without limit in one process: worker_concurrency is a positive int, bounded."""
    s = _settings(**env)
    limits = queue_limits(s)
    configured = max(s.intent_queue_worker_concurrency, s.sbx_queue_worker_concurrency)
    for name in QUEUES:
        worker = limits[name].get("worker_concurrency")
        assert isinstance(worker, int) and worker >= 1, name
        assert worker <= max(s.max_executor_threads, configured, 10), name
        if "partition_worker_concurrency" in limits[name]:
            assert worker >= limits[name]["partition_worker_concurrency"], name


# --- partition_for ------------------------------------------------------------------------------


def test_partition_for_inherits_the_parent_key() -> None:
    """A child on partitioned sbxQ carries its parent's partition key."""
    assert partition_for(_settings(), "tenant-a") == "tenant-a"


@pytest.mark.parametrize("key", [None, ""])
def test_partition_for_defaults_when_missing(key: str | None) -> None:
    """Without a parent key, a child on partitioned sbxQ gets the default partition."""
    assert DEFAULT_PARTITION == "default"
    assert partition_for(_settings(), key) == "default"


@pytest.mark.parametrize("key", [None, "tenant-a"])
def test_partition_for_is_none_when_sbx_queue_unpartitioned(key: str | None) -> None:
    """SBX_QUEUE_PARTITION=false drops the partition key entirely."""
    assert partition_for(_settings(SBX_QUEUE_PARTITION="false"), key) is None
