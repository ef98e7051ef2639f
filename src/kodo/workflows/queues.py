"""The four queues, registered from settings with bounded concurrency and tuned polling."""

from __future__ import annotations

from typing import Any

from dbos import DBOS

from kodo.settings import Settings

DEFAULT_PARTITION = "default"


def queue_limits(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each queue's DBOS limits. A partitioned queue applies its caps per partition."""
    poll = settings.queue_polling_interval_sec
    quiet = settings.control_queue_polling_interval_sec  # little traffic: fewer idle polling transactions
    threads = settings.max_executor_threads

    def lane(*, partitioned: bool, worker: int, overall: int, rate: int, period: int) -> dict[str, Any]:
        limits: dict[str, Any] = {"polling_interval_sec": poll}
        rate_limit = {"limit": rate, "period": period}
        if partitioned:
            # As the predecessor's partitioned queues did, every limit applies per partition. A queue-wide
            # limiter on a partitioned queue would also make each partition's claim SERIALIZABLE (write
            # skew across partitions): conflicting claims, then DBOS backing its polling off.
            limits |= {
                "partition_concurrency": overall,
                "partition_worker_concurrency": worker,
                "partition_limiter": rate_limit,
                "worker_concurrency": max(worker, threads // 2),
            }
        else:
            limits |= {"global_concurrency": overall, "worker_concurrency": worker, "limiter": rate_limit}
        return limits

    return {
        "intentQ": lane(
            partitioned=settings.intent_queue_partition,
            worker=settings.intent_queue_worker_concurrency,
            overall=settings.intent_queue_concurrency,
            rate=settings.intent_queue_rate_limit_per_period,
            period=settings.intent_queue_rate_limit_period_sec,
        ),
        "sbxQ": lane(
            partitioned=settings.sbx_queue_partition,
            worker=settings.sbx_queue_worker_concurrency,
            overall=settings.sbx_queue_concurrency,
            rate=settings.sbx_queue_rate_limit_per_period,
            period=settings.sbx_queue_rate_limit_period_sec,
        ),
        "controlQ": {"polling_interval_sec": quiet, "global_concurrency": 5, "worker_concurrency": 5},
        "compileQ": {"polling_interval_sec": quiet, "global_concurrency": 10, "worker_concurrency": 10},
        # Webhook deliveries (kodo.workflows.webhooks): off every run's path, so polled at the quiet interval
        # (an idle poll of an unpartitioned queue is a whole claim transaction); a slow receiver holds one
        # slot for at most KODO_WEBHOOK_TIMEOUT_SEC per try.
        "webhookQ": {"polling_interval_sec": quiet, "worker_concurrency": 8},
    }


def register_queues(settings: Settings) -> None:
    """Register (or update) every queue. Call after ``DBOS.launch()``."""
    for name, limits in queue_limits(settings).items():
        DBOS.register_queue(name, on_conflict="always_update", **limits)


def queue_partition(key: str) -> str:
    """The DBOS queue partition of a run's ``queuePartitionKey``: its tenant, the part before the first ``:``.
    So ``acme``, ``acme:ci`` and ``acme:1`` … ``acme:N`` share one partition and its concurrency cap: a tenant
    cannot multiply its share by opening partitions (the run keeps its full key for scoping and display)."""
    return key.split(":", 1)[0] or key


def partition_for(settings: Settings, key: str | None) -> str | None:
    """The partition key a child carries on sbxQ: the parent's tenant, or a default one when sbxQ is partitioned."""
    if not settings.sbx_queue_partition:
        return None
    return queue_partition(key) if key else DEFAULT_PARTITION
