"""Ingress queue policy (reference §5), applied before any row is written.

Recipe caps come from the pinned recipe version (``POST /api/run``) or, for the intent routes, from the
legacy ``app.recipes`` table (``recipeName`` default ``compile-default``); the parent must
use ``intentQ``; the partition law needs a non-blank ``queuePartitionKey``; lanes map to priorities
(``interactive`` 1, ``batch`` 1000; an explicit ``priority`` wins); every enqueue carries a priority.
Every violation is a 400 with ``code: "queue_policy_violation"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from kodo import pricing
from kodo.errors import PolicyViolation
from kodo.models import LANE_PRIORITY, RunStart, Workload
from kodo.settings import Settings
from kodo.store import recipe_caps
from kodo.workflows import limits

_BUDGET_CHECKS = (
    ("maxFanout", "steps", "count"),
    ("maxSBXMinutes", "sandboxMinutes", "minutes"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueCaps:
    """The caps a start is checked against: a pinned recipe version's, or a legacy recipe's."""

    source: str
    queue_name: str
    max_concurrency: int
    max_steps: int
    max_sandbox_minutes: int
    version: int | None = None


def legacy_caps(conn: sa.Connection, request: dict[str, Any]) -> QueueCaps:
    name = request.get("recipeName") or "compile-default"
    recipe = recipe_caps.find(conn, name, request.get("recipeVersion"))
    if recipe is None:
        raise PolicyViolation(f"recipe not found: {name}")
    return QueueCaps(
        source=name,
        queue_name=recipe.queue_name,
        max_concurrency=recipe.max_concurrency,
        max_steps=recipe.max_steps,
        max_sandbox_minutes=recipe.max_sandbox_minutes,
        version=recipe.version,
    )


def _priced_for(settings: Settings, budget: dict[str, Any]) -> None:
    """A USD limit needs the live model's price (docs/budgets.md); replay and record calls cost nothing."""
    if budget.get("maxCostUsd") is None or settings.oc_mode != "live":
        return
    model = settings.openai_model if settings.oc_provider == "openai" else settings.oc_model
    if pricing.lookup(settings.price_table, model) is None:
        raise PolicyViolation(
            f"budget:maxCostUsd: model {model!r} has no price; add it to KODO_MODEL_PRICES"
            + ("" if model else " and name it in OC_MODEL")
        )


def admit(
    conn: sa.Connection,
    settings: Settings,
    intent_id: str,
    request: dict[str, Any],
    caps: QueueCaps | None = None,
) -> RunStart:
    """Turn a schema-valid run request into a RunStart, or raise PolicyViolation.

    ``caps`` pins the recipe (canonical start); without it the legacy ``recipeName`` lookup applies.
    """
    recipe = caps if caps is not None else legacy_caps(conn, request)
    queue_name = request.get("queueName") or recipe.queue_name
    if queue_name != "intentQ":
        raise PolicyViolation(f"parent intent workflow must use intentQ (got {queue_name})")

    workload_json = request.get("workload")
    limits.check_workload(workload_json, settings)
    workload = (
        Workload(
            concurrency=workload_json["concurrency"],
            steps=workload_json["steps"],
            sandbox_minutes=workload_json["sandboxMinutes"],
        )
        if workload_json
        else None
    )
    budget = request.get("budget")
    if budget is not None:
        for limit_name, field, _unit in _BUDGET_CHECKS:
            observed = workload_json.get(field) if workload_json else None
            if observed is not None and observed > budget[limit_name]:
                raise PolicyViolation(
                    f"budget:{limit_name}: observed {observed} > limit {budget[limit_name]} (ingress)"
                )
        _priced_for(settings, budget)
        timeout = request.get("timeoutMS")
        if timeout is not None and timeout > budget["maxWallClockMS"]:
            raise PolicyViolation(
                f"budget:maxWallClockMS: observed {timeout} > limit {budget['maxWallClockMS']} (ingress)"
            )
    if workload is not None:
        for field, observed, cap in (
            ("concurrency", workload.concurrency, recipe.max_concurrency),
            ("steps", workload.steps, recipe.max_steps),
            ("sandboxMinutes", workload.sandbox_minutes, recipe.max_sandbox_minutes),
        ):
            if observed > cap:
                raise PolicyViolation(f"recipe cap exceeded: {field} {observed} > {cap} ({recipe.source})")

    for field in ("tenantId", "taskKey", "queuePartitionKey", "traceId"):
        value = request.get(field)
        if isinstance(value, str) and not value.strip():
            raise PolicyViolation(f"{field} must not be blank")
    partition_key = request.get("queuePartitionKey")
    if settings.intent_queue_partition and not partition_key:
        raise PolicyViolation(
            "queuePartitionKey is required for partitioned operations on intentQ (INTENT_QUEUE_PARTITION=true)"
        )
    lane = request.get("lane") or "interactive"
    explicit = request.get("priority")
    if explicit is not None and not settings.intent_queue_priority_enabled:
        raise PolicyViolation(f"priority disabled for queue: {queue_name}")
    priority = explicit if explicit is not None else LANE_PRIORITY[lane]
    return RunStart(
        intent_id=intent_id,
        queue_name=queue_name,
        priority=priority,
        lane=lane,
        queue_partition_key=partition_key,
        trace_id=request.get("traceId"),
        tenant_id=request.get("tenantId"),
        deduplication_id=request.get("deduplicationID") or request.get("taskKey"),
        timeout_ms=request.get("timeoutMS"),
        recipe_name=recipe.source,
        recipe_version=recipe.version,
        workload=workload,
        budget=budget,
        auto_approve=bool(request.get("autoApprove", False)),
    )
