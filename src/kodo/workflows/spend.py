"""Spend budgets (docs/budgets.md): reserve before each live agent call, settle after it, park at a
``budget`` gate instead of failing when a limit would be crossed.

* **Reserve** (``reserve_in``, the datasource transaction before the agent's step): with the run row locked
  (and the tenant's budget row), hold the call's maximum — estimated input tokens plus
  ``KODO_AGENT_MAX_OUTPUT_TOKENS``, priced at the model's price — as an ``app.spend_reservations`` row,
  unless settled spend + open holds + this hold would cross a limit: the run's ``maxTokens`` or
  ``maxCostUsd`` (as raised by approved budget gates), or its tenant's daily or monthly USD limit.
* **Settle** (``charge_of`` + ``kodo.store.spend.close``, in the transaction that ledgers the call): the
  reservation is closed and the call's actual usage and cost are in the ledger row.
* **Breach** → the run parks at a ``budget`` gate showing its spend by step and model, the limit hit and a
  proposed top-up. Approved (``{"choice": "yes", "maxCostUsd": n, "maxTokens": n}``) → the new limits hold
  and the call is tried again; rejected, or unanswered by ``KODO_BUDGET_GATE_TIMEOUT_S`` → the run ends
  ``retries_exceeded`` with ``BUDGET_EXCEEDED`` and a BUDGET artifact. A tenant's limit parks until its
  window rolls over (the gate's deadline), then the call is tried again.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any, TypedDict

import sqlalchemy as sa

from kodo import pricing
from kodo.adapters.agent import AgentRequest, AgentResult
from kodo.identity import artifact_uri, gate_key_for
from kodo.models import NewArtifact, Run
from kodo.store import agent_calls, artifacts, recipe_versions, runs, webhooks
from kodo.store import gates as gate_store
from kodo.store import spend as spend_store
from kodo.store.spend import Charge
from kodo.workflows import gates
from kodo.workflows.context import FailureJson, ParkJson, RunContext
from kodo.workflows.runtime import services

RUN_LIMITS = {"maxTokens": "tokens", "maxCostUsd": "usd"}
TENANT_LIMITS = {"tenantDailyUsd": "usd", "tenantMonthlyUsd": "usd"}
BUDGET_FORM = {
    "v": 1,
    "title": "Spend limit reached",
    "fields": [
        {"k": "choice", "t": "enum", "vs": ["yes", "no"]},
        {"k": "maxCostUsd", "t": "num", "opt": True},
        {"k": "maxTokens", "t": "int", "opt": True},
        {"k": "rationale", "t": "str", "opt": True},
    ],
}
CENT = Decimal("0.01")


def money(value: Decimal | float | str) -> float:
    """A USD amount for JSON (8 decimal places, as the ledger keeps it)."""
    return float(Decimal(str(value)).quantize(pricing.QUANTUM))


def reservation_model() -> str | None:
    """The model a live call will use, as far as kodo knows before the call (OpenAI-compatible: its setting)."""
    return getattr(services().agent, "model", None) or services().settings.oc_model


def estimate_input_tokens(request: AgentRequest) -> int:
    """An over-estimate of a call's input tokens: one per three bytes of prompt, context and schema."""
    text = request.prompt + json.dumps(request.context, default=str) + json.dumps(request.schema)
    return len(text.encode()) // 3 + 1


def charge_of(result: AgentResult | None, mode: str) -> Charge | None:
    """The ledger's usage of a call: priced at the table (else the provider's own cost); charged only live."""
    usage = result.usage if result is not None else None
    if usage is None:
        return None
    price = pricing.lookup(services().settings.price_table, usage.model)
    if price is not None:
        priced = price.cost(
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cached_tokens=usage.cached_tokens
        )
    else:
        priced = Decimal(str(usage.provider_cost_usd or 0)).quantize(pricing.QUANTUM, rounding=ROUND_CEILING)
    return Charge(
        model=usage.model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens,
        cost_usd=priced if mode == "live" else Decimal(0),
        priced_usd=priced,
    )


def limits_of(
    conn: sa.Connection,
    *,
    run_id: str,
    generation: int,
    budget: dict[str, Any] | None,
    recipe_id: str | None,
    recipe_v: str | None,
) -> dict[str, Decimal]:
    """A run's spend limits in force: its budget's (else its recipe's default), raised by approved budget gates."""
    given = dict(budget or {})
    if "maxCostUsd" not in given and recipe_id and recipe_v:  # the recipe's default
        version = recipe_versions.get(conn, recipe_id, recipe_v)
        default = version.spec.get("limits", {}).get("maxCostUsd") if version else None
        if default is not None:
            given["maxCostUsd"] = default
    if any(key in given for key in RUN_LIMITS):  # top-ups raise a limit in force, so there is one to raise
        given.update(spend_store.approved_limits(conn, run_id, generation))
    found: dict[str, Decimal] = {}
    for key in RUN_LIMITS:
        value = _positive(given.get(key))
        if value is not None:
            found[key] = value
    return found


def _positive(value: Any) -> Decimal | None:
    """A limit as given (a number, or a number as text from a form); None unless finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(str(value).strip())
    except ArithmeticError:
        return None
    return number if number.is_finite() and number > 0 else None


def _limits(conn: sa.Connection, ctx: RunContext) -> dict[str, Decimal]:
    return limits_of(
        conn,
        run_id=ctx.run_id,
        generation=ctx.generation,
        budget=ctx.budget,
        recipe_id=ctx.recipe_id,
        recipe_v=ctx.recipe_v,
    )


def header(conn: sa.Connection, run: Run, now: datetime, spent: spend_store.RunSpend | None = None) -> dict[str, Any]:
    """The run header's ``spend``: charged, held, what the run would have cost, limits and what remains
    (``spent``: read here unless the caller read it with the run)."""
    spent = spent if spent is not None else spend_store.run_spend(conn, run.id)
    limits = limits_of(
        conn,
        run_id=run.id,
        generation=run.generation,
        budget=run.budget,
        recipe_id=run.recipe_id,
        recipe_v=run.recipe_v,
    )
    tenant_today = None
    if run.tenant_id:
        start, _ = _windows(now)["tenantDailyUsd"]
        tenant_today = spend_store.tenant_spend(conn, run.tenant_id, start)[0]
    return header_of(spent, limits, tenant_today)


def header_of(spent: spend_store.RunSpend, limits: dict[str, Decimal], tenant_today: Decimal | None) -> dict[str, Any]:
    """The header's ``spend`` from what was read: a run without budget, recipe or tenant has no limits and no
    tenant day to read (``limits_of`` reads nothing for it), so its spend needs no read beyond its own."""
    cost_limit, token_limit = limits.get("maxCostUsd"), limits.get("maxTokens")
    return {
        "costUsd": money(spent.cost_usd),
        "tokens": spent.tokens,
        "reservedUsd": money(spent.reserved_usd),
        "reservedTokens": spent.reserved_tokens,
        "pricedUsd": money(spent.priced_usd),
        "maxCostUsd": money(cost_limit) if cost_limit is not None else None,
        "maxTokens": int(token_limit) if token_limit is not None else None,
        "remainingUsd": money(cost_limit - spent.cost_usd - spent.reserved_usd) if cost_limit is not None else None,
        "remainingTokens": int(token_limit) - spent.tokens - spent.reserved_tokens if token_limit else None,
        "tenantTodayUsd": money(tenant_today) if tenant_today is not None else None,
    }


def _windows(now: datetime) -> dict[str, tuple[datetime, datetime]]:
    """The tenant windows containing ``now`` (UTC day and month): (start, next start)."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    return {"tenantDailyUsd": (day, day + timedelta(days=1)), "tenantMonthlyUsd": (month, next_month)}


def _breach(
    conn: sa.Connection, ctx: RunContext, tokens: int, cost: Decimal, money_limited: list[str]
) -> dict[str, Any] | None:
    """The first limit this hold would cross, or None; fills ``money_limited`` with the USD limits in force."""
    limits = _limits(conn, ctx)
    spent = spend_store.run_spend(conn, ctx.run_id)
    money_limited.extend(key for key in limits if RUN_LIMITS[key] == "usd")
    run_observed = {
        "maxTokens": Decimal(spent.tokens + spent.reserved_tokens + tokens),
        "maxCostUsd": spent.cost_usd + spent.reserved_usd + cost,
    }
    for key, limit in limits.items():
        if run_observed[key] > limit:
            return {"scope": "run", "metric": key, "limit": limit, "observed": run_observed[key]}
    tenant = ctx.tenant_id
    budget = spend_store.tenant_budget(conn, tenant, lock=True) if tenant else None
    if budget is None or tenant is None:
        return None
    now = services().clock()
    for key, (start, ends) in _windows(now).items():
        tenant_limit = budget.daily_usd if key == "tenantDailyUsd" else budget.monthly_usd
        if tenant_limit is None:
            continue
        money_limited.append(key)
        charged, held = spend_store.tenant_spend(conn, tenant, start)
        if charged + held + cost > tenant_limit:
            wait = max(1, math.ceil((ends - now).total_seconds()))
            return {
                "scope": "tenant",
                "metric": key,
                "limit": tenant_limit,
                "observed": charged + held + cost,
                "waitS": wait,
            }
    return None


def _proposal(breach: dict[str, Any]) -> dict[str, Any]:
    """A top-up that fits this call: twice the limit, or what the call needs, whichever is more."""
    if breach["scope"] != "run":
        return {}
    needed = max(breach["limit"] * 2, breach["observed"])
    if breach["metric"] == "maxTokens":
        return {"maxTokens": int(needed)}
    return {"maxCostUsd": money(needed.quantize(CENT, rounding=ROUND_CEILING))}


def _details(conn: sa.Connection, ctx: RunContext, step_id: str, breach: dict[str, Any]) -> dict[str, Any]:
    spent = spend_store.run_spend(conn, ctx.run_id)
    unit = RUN_LIMITS.get(breach["metric"]) or TENANT_LIMITS[breach["metric"]]
    return {
        "kind": "budget",
        "scope": breach["scope"],
        "metric": breach["metric"],
        "unit": unit,
        "step": step_id,
        "limit": money(breach["limit"]) if unit == "usd" else int(breach["limit"]),
        "observed": money(breach["observed"]) if unit == "usd" else int(breach["observed"]),
        "spend": {
            "costUsd": money(spent.cost_usd),
            "tokens": spent.tokens,
            "reservedUsd": money(spent.reserved_usd),
            "byStep": [
                {
                    "step": line.group,
                    "model": line.model,
                    "calls": line.calls,
                    "inputTokens": line.input_tokens,
                    "outputTokens": line.output_tokens,
                    "costUsd": money(line.cost_usd),
                }
                for line in spend_store.lines_by_step(conn, ctx.run_id)
            ],
        },
        "proposedTopUp": _proposal(breach),
        "resumesAfterS": breach.get("waitS"),
    }


def _budget_gates(conn: sa.Connection, ctx: RunContext) -> list[gate_store.Gate]:
    return [
        gate
        for gate in gate_store.list_for_run(conn, ctx.run_id)
        if gate.purpose == "budget" and gate.generation == ctx.generation
    ]


def _ended(gate: gate_store.Gate) -> bool:
    """Whether a resolved budget gate ends the run: rejected, or a run limit's gate that timed out."""
    if gate.is_open:
        return False
    scope = ((gate.prompt or {}).get("details") or {}).get("scope")
    state = (gate.result or {}).get("state")
    if state == "WINDOW_ROLLED_OVER":  # a tenant's window: try again
        return False
    if state == "TIMED_OUT":
        return scope != "tenant"
    return (gate.decision or {}).get("decision") != "yes"


def _fail_with_artifact(conn: sa.Connection, ctx: RunContext, details: dict[str, Any]) -> ReservationJson:
    metric = details["metric"]
    reason = f"budget:{metric}: observed {details['observed']} > limit {details['limit']} ({details['scope']})"
    inline = {**details, "scope": "runtime", "budgetScope": details["scope"], "boundary": "agent-call"}
    artifacts.add(
        conn,
        ctx.run_id,
        NewArtifact(
            step_id="BUDGET",
            idx=0,
            kind="json_diagnostic",
            uri=artifact_uri(ctx.run_id, "BUDGET", metric, f"{metric}.json"),
            task_key=metric,
            attempt=ctx.generation,
            inline={**inline, "outcome": "blocked", "reason": reason},
        ),
    )
    return {"failed": {"code": "BUDGET_EXCEEDED", "message": reason}}


class ReservationJson(TypedDict, total=False):
    """``reserve_in``'s answer, as checkpointed: exactly one of its keys."""

    reserved: bool
    parked: ParkJson
    failed: FailureJson


def reserve_in(conn: sa.Connection, ctx: RunContext, request: AgentRequest) -> ReservationJson:
    """Hold a live call's maximum before it is made: ``{"reserved": bool}``, ``{"parked": …}`` or
    ``{"failed": {code, message}}`` (the BUDGET artifact written in this transaction)."""
    runs.get(conn, ctx.run_id, lock=True)  # serialise the run's reservations (lock order: run row first)
    if agent_calls.find(conn, request.op_key) is not None or spend_store.open_reservation(conn, request.op_key):
        return {"reserved": False}  # ledgered already (or held by an earlier try of this step)
    earlier = _budget_gates(conn, ctx)  # newest first
    if earlier and _ended(earlier[0]):  # answered "no", or a run limit's gate timed out: the run ends here
        return _fail_with_artifact(conn, ctx, dict((earlier[0].prompt or {}).get("details") or {}))
    settings = services().settings
    model = reservation_model() or "unknown"
    price = pricing.lookup(settings.price_table, model)
    input_tokens, output_tokens = estimate_input_tokens(request), settings.agent_max_output_tokens
    tokens = input_tokens + output_tokens
    cost = price.cost(input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=0) if price else Decimal(0)
    money_limited: list[str] = []
    breach = _breach(conn, ctx, tokens, cost, money_limited)
    if price is None and money_limited:
        return {
            "failed": {
                "code": "MODEL_UNPRICED",
                "message": f"model {model!r} has no price, and a USD limit applies ({', '.join(money_limited)}): "
                "add it to KODO_MODEL_PRICES",
            }
        }
    if breach is None:
        spend_store.reserve(
            conn,
            op_key=request.op_key,
            run_id=ctx.run_id,
            tenant_id=ctx.tenant_id,
            step_id=request.step_id,
            model=model,
            tokens=tokens,
            cost_usd=cost,
        )
        return {"reserved": True}
    details = _details(conn, ctx, request.step_id, breach)
    key = gate_key_for(ctx.run_id, request.step_id, f"budget:{len(earlier) + 1}", ctx.generation)
    ttl = breach.get("waitS") or settings.budget_gate_timeout_s
    parked = gates.park_budget_in(conn, ctx, key, request.step_id, int(ttl), BUDGET_FORM, details)
    # The webhook event, in the transaction that parks the run (the outbox: kodo.store.webhooks).
    event = {name: details[name] for name in ("scope", "metric", "unit", "step", "limit", "observed")}
    webhooks.record_event(
        conn,
        "budget.exceeded",
        {"workflowId": ctx.workflow_id, "runId": ctx.run_id, "gateKey": key, **event},
        run_id=ctx.run_id,
        partition_key=ctx.partition_key,
    )
    return {"parked": parked}
