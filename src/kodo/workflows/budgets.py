"""Run budgets ``{maxFanout, maxSBXMinutes, maxArtifactsMB, maxRetriesPerStep, maxWallClockMS}``.

Ingress checks live in the queue policy (400). Here are the runtime checks, at two boundaries:

* ``fanout`` — after the tasks are planned, before any child starts: task count and wall clock;
* ``completion`` — after every child returned, before ExecuteST: sandbox minutes, artifact MB,
  retries per step and wall clock.

Wall clock is the run's *active* time (its generation's first dequeue to now, minus time parked at
human gates), read from Postgres inside a datasource transaction, so DBOS checkpoints it; workflow code
never reads the raw clock. The first violation writes exactly one ``BUDGET`` artifact (shape below) in
that same transaction; the workflow then fails the run ``retries_exceeded`` with code
``BUDGET_EXCEEDED`` and a message naming the budget.

BUDGET artifact: ``step_id "BUDGET"``, ``task_key <metric>``, ``idx 0``, ``attempt <generation>``,
``kind "json_diagnostic"``, ``uri artifact://run/<runId>/step/BUDGET/task/<metric>/<metric>.json``, inline
``{kind:"budget", metric, scope:"runtime", boundary, limit, observed, unit, outcome:"blocked", reason}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import sqlalchemy as sa

from kodo.identity import artifact_uri
from kodo.models import NewArtifact
from kodo.store import artifacts
from kodo.store import budgets as budget_store
from kodo.workflows.context import RunContext
from kodo.workflows.runtime import transact

UNITS = {
    "maxFanout": "count",
    "maxSBXMinutes": "minutes",
    "maxArtifactsMB": "mb",
    "maxRetriesPerStep": "retries",
    "maxWallClockMS": "ms",
}
MIB = 1024 * 1024


def message(metric: str, observed: int, limit: float, scope: str) -> str:
    return f"budget:{metric}: observed {observed} > limit {limit} ({scope})"


def completion_usage(results: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """What the fan-out used: sandbox minutes (longest task), artifact MB, retries (attempts beyond the first)."""
    wall = max((int((r.get("metrics") or {}).get("wallMs", 0)) for r in results), default=0)
    size = 0
    for result in results:
        size += len(str(result.get("stdout", "")).encode()) + len(str(result.get("stderr", "")).encode())
        size += sum(len(str(f.get("inline", "")).encode()) for f in result.get("filesOut", []))
        size += len(json.dumps(result.get("raw", {})).encode()) + len(json.dumps(result.get("metrics", {})).encode())
    attempts = max((int(r.get("attempt", 1)) for r in results), default=1)
    return {
        "maxSBXMinutes": math.ceil(wall / 60_000),
        "maxArtifactsMB": math.ceil(size / MIB),
        "maxRetriesPerStep": attempts - 1,
    }


def first_violation(budget: dict[str, int | float], observed: dict[str, int]) -> tuple[str, int, float] | None:
    """(metric, observed, limit) of the first budget exceeded, in the order of ``UNITS``."""
    for metric in UNITS:
        if metric in observed and metric in budget and observed[metric] > budget[metric]:
            return metric, observed[metric], budget[metric]
    return None


def budget_artifact(
    run_id: str, generation: int, boundary: str, metric: str, observed: int, limit: float
) -> NewArtifact:
    return NewArtifact(
        step_id="BUDGET",
        idx=0,
        kind="json_diagnostic",
        uri=artifact_uri(run_id, "BUDGET", metric, f"{metric}.json"),
        task_key=metric,
        attempt=generation,
        inline={
            "kind": "budget",
            "metric": metric,
            "scope": "runtime",
            "boundary": boundary,
            "limit": limit,
            "observed": observed,
            "unit": UNITS[metric],
            "outcome": "blocked",
            "reason": message(metric, observed, limit, "runtime"),
        },
    )


class ViolationJson(TypedDict):
    """A runtime budget crossed at a boundary (the ``budget.<boundary>`` checkpoint's output, when not None)."""

    metric: str
    observed: int
    limit: float
    message: str


def _check(conn: sa.Connection, ctx: RunContext, boundary: str, observed: dict[str, int]) -> ViolationJson | None:
    measured = dict(observed)
    measured["maxWallClockMS"] = budget_store.active_ms(
        conn, run_id=ctx.run_id, workflow_id=ctx.workflow_id, generation=ctx.generation
    )
    found = first_violation(ctx.budget or {}, measured)
    if found is None:
        return None
    metric, value, limit = found
    artifacts.add(conn, ctx.run_id, budget_artifact(ctx.run_id, ctx.generation, boundary, metric, value, limit))
    return {"metric": metric, "observed": value, "limit": limit, "message": message(metric, value, limit, "runtime")}


def check(ctx: RunContext, boundary: str, observed: dict[str, int]) -> ViolationJson | None:
    """Check the run's budget at a boundary; returns the violation (its BUDGET artifact written) or None."""
    if not ctx.budget:
        return None
    return transact(f"budget.{boundary}", _check, ctx, boundary, observed)
