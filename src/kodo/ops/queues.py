"""Queue views for operators: depth, partition fairness, priority latency and a throughput summary."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from kodo.ops.context import Ops
from kodo.store import queue_stats


def _camel(row: Any) -> dict[str, Any]:
    out = {}
    for key, value in asdict(row).items():
        head, *rest = key.split("_")
        out[head + "".join(part.title() for part in rest)] = value
    return out


def depth(ops: Ops, *, queue: str | None, status: str | None, limit: int) -> list[dict[str, Any]]:
    """QueueDepthRow[] ordered by queue and status."""
    with ops.engine.connect() as conn:
        return [_camel(row) for row in queue_stats.depth(conn, queue=queue, status=status, limit=limit)]


def fairness(ops: Ops, *, queue: str | None, limit: int = 200) -> list[dict[str, Any]]:
    with ops.engine.connect() as conn:
        rows = queue_stats.fairness(conn, queue=queue, limit=limit)
    return [
        {
            **_camel(row),
            "source": "dbos",
            "provenance": "dbos.workflow_status",
            "rawRef": f"dbos://queues/fairness/{row.queue_name}",
        }
        for row in rows
    ]


def priority(ops: Ops, *, queue: str | None, window_s: int = 3600, limit: int = 200) -> list[dict[str, Any]]:
    with ops.engine.connect() as conn:
        rows = queue_stats.priority(conn, queue=queue, window_s=window_s, limit=limit)
    return [
        {
            **_camel(row),
            "source": "dbos",
            "provenance": "dbos.workflow_status",
            "rawRef": f"dbos://queues/priority/{row.queue_name}",
        }
        for row in rows
    ]


def throughput(ops: Ops, *, window_s: int) -> dict[str, Any]:
    """Completions per workflow name over the window (count, rate, p50/p95), fairness, priority, run statuses."""
    with ops.engine.connect() as conn:
        done = queue_stats.completions(conn, window_s=window_s)
        statuses = queue_stats.run_statuses(conn)
    completions = [{**_camel(row), "perSecond": round(row.count / window_s, 4)} for row in done]
    finished = sum(row.count for row in done)
    return {
        "windowSec": window_s,
        "completed": finished,
        "perSecond": round(finished / window_s, 4),
        "completions": completions,
        "runs": [{"status": status, "count": count} for status, count in statuses.items()],
        "fairness": fairness(ops, queue=None),
        "priority": priority(ops, queue=None, window_s=window_s),
    }


def failures(ops: Ops, *, window_s: int = 86400, limit: int = 50) -> list[dict[str, Any]]:
    with ops.engine.connect() as conn:
        return queue_stats.failures(conn, window_s=window_s, limit=limit)


def slow_steps(ops: Ops, *, min_ms: int = 5000, limit: int = 50) -> list[dict[str, Any]]:
    with ops.engine.connect() as conn:
        return queue_stats.slow_steps(conn, min_ms=min_ms, limit=limit)
