"""Batch ops by filter (``kodo ops …``): select workflows, then apply one action to each, audited.

A selection is a ``Filter`` over ``dbos.workflow_status`` joined to the run each workflow serves
(status, run status, name, queue, partition, tenant, lane, version, age, ids). Each item is then
handed to the same operation the HTTP API uses, so a run's current phase is cancelled run-aware.
One item's failure (a 409, say) is reported and does not stop the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from kodo.errors import KodoError
from kodo.ops import workflows
from kodo.ops.context import MAX_BATCH, Ops, require_text
from kodo.store import dbos_workflows, webhooks
from kodo.store.dbos_workflows import Filter, WorkflowRow


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    workflow_id: str
    ok: bool
    result: dict[str, Any]
    error: str | None = None


def select(ops: Ops, where: Filter) -> list[WorkflowRow]:
    with ops.engine.connect() as conn:
        return dbos_workflows.select(conn, where)


# Options an operator confuses: the runbooks' "tenant" (``--tenant tenant-A``) is kodo's queue partition.
_SIMILAR = (
    ("tenants", "partitions", "--tenant", "--partition", "queue partition"),
    ("partitions", "tenants", "--partition", "--tenant", "tenant id"),
)


def similar_hint(ops: Ops, where: Filter) -> str | None:
    """For a selection that matched nothing: a hint naming the option that would match (tenant ↔ partition)."""
    for given, other, flag, other_flag, meaning in _SIMILAR:
        values = list(getattr(where, given))
        if not values or getattr(where, other):
            continue
        if given == "tenants":
            swapped = replace(where, tenants=(), partitions=values, limit=MAX_BATCH)
        else:
            swapped = replace(where, partitions=(), tenants=values, limit=MAX_BATCH)
        found = len(select(ops, swapped))
        if found:
            shown = " ".join(f"{other_flag} {value}" for value in values)
            return (
                f"hint: nothing has {flag} {' '.join(values)}, but {found} workflow(s) match {shown} "
                f"(its {meaning}; the runbooks' \"tenant\" is kodo's queue partition)"
            )
    return None


def _one(ops: Ops, action: str, workflow_id: str, actor: str, reason: str, options: dict[str, Any]) -> dict[str, Any]:
    if action == "cancel":
        return workflows.cancel(ops, workflow_id, actor=actor, reason=reason)
    if action == "resume":
        return workflows.resume(ops, workflow_id, actor=actor, reason=reason)
    if action in {"fork", "retry-from-step"}:
        why = f"retry-from-step:{reason}" if action == "retry-from-step" else reason
        return workflows.fork(
            ops,
            workflow_id,
            step_n=int(options["step"]),
            app_version=options.get("app_version"),
            actor=actor,
            reason=why,
        )
    raise KodoError(f"unknown batch action {action}")


def apply(
    ops: Ops,
    action: str,
    workflow_ids: list[str],
    *,
    actor: str | None,
    reason: str | None,
    options: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Outcome]:
    """Apply ``action`` to every id in order; ``progress(1)`` after each."""
    given = require_text(actor=actor, reason=reason)
    outcomes = []
    for workflow_id in workflow_ids[:MAX_BATCH]:
        try:
            result = _one(ops, action, workflow_id, given["actor"], given["reason"], options or {})
            outcomes.append(Outcome(workflow_id=workflow_id, ok=True, result=result))
        except KodoError as error:
            outcomes.append(Outcome(workflow_id=workflow_id, ok=False, result={}, error=error.message))
        if progress is not None:
            progress(1)
    _announce(ops, action, given, outcomes)
    return outcomes


def _announce(ops: Ops, action: str, given: dict[str, str], outcomes: list[Outcome]) -> None:
    """The ``ops.batch_done`` webhook event, once the batch's last item has committed (each item commits on its
    own, so the event has a transaction of its own too)."""
    failed = [outcome.workflow_id for outcome in outcomes if not outcome.ok]
    data = {
        "action": action,
        "actor": given["actor"],
        "reason": given["reason"],
        "total": len(outcomes),
        "ok": len(outcomes) - len(failed),
        "failed": len(failed),
        "failedWorkflowIds": failed[:100],
    }
    with ops.engine.begin() as conn:
        webhooks.record_event(conn, "ops.batch_done", data)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> float:
    """``90s``, ``10m``, ``2h``, ``1d`` (a bare number is seconds) → seconds."""
    raw = text.strip().lower()
    unit = raw[-1] if raw and raw[-1] in _UNITS else "s"
    number = raw[:-1] if raw and raw[-1] in _UNITS else raw
    try:
        value = float(number)
    except ValueError as error:
        raise KodoError(f"invalid age {text!r}: use e.g. 90s, 10m, 2h or 1d") from error
    if value < 0:
        raise KodoError(f"invalid age {text!r}: must not be negative")
    return value * _UNITS[unit]
