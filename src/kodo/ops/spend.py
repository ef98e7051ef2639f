"""Spend for operators: tenants' spend limits (set and shown, each change audited) and the spend report of
``kodo ops spend`` (by tenant and model, from the agent-call ledger)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa

from kodo.errors import InvalidInput
from kodo.ops.targets import now_iso
from kodo.store import ops_audit
from kodo.store import spend as spend_store

_SINCE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_USD = Decimal(1_000_000)


def usd(value: Decimal) -> str:
    """A USD amount as text, without trailing zeros (``Decimal('5.00000000')`` → ``5``)."""
    return format(value.normalize(), "f") if value else "0"


def tenant_anchor(tenant_id: str) -> str:
    """Where a tenant's audit rows hang (``app.artifacts.run_id``): ``tenant:<id>``."""
    return f"tenant:{tenant_id}"


def parse_usd(raw: str | None, name: str) -> Decimal | None:
    """A limit in USD (``none`` clears it): a positive number up to 1,000,000 with at most 8 decimals."""
    if raw is None or raw.strip().lower() == "none":
        return None
    try:
        value = Decimal(raw.strip())
    except InvalidOperation as error:
        raise InvalidInput(f"{name}: not a number: {raw!r}") from error
    if not value.is_finite() or value <= 0 or value > MAX_USD or value.as_tuple().exponent < -8:  # type: ignore[operator]
        raise InvalidInput(f"{name}: want a USD amount > 0 and <= {MAX_USD} with at most 8 decimals (got {raw!r})")
    return value


def parse_since(raw: str | None, now: datetime) -> datetime | None:
    """``--since``: an ISO-8601 time, or an age (90s, 10m, 2h, 7d) before ``now``."""
    if raw is None:
        return None
    found = _SINCE.match(raw.strip())
    if found:
        return now - timedelta(seconds=int(found.group(1)) * _UNITS[found.group(2)])
    try:
        parsed = datetime.fromisoformat(raw.strip())
    except ValueError as error:
        raise InvalidInput(f"--since: want an ISO-8601 time or an age like 2h or 7d (got {raw!r})") from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def set_budget(
    conn: sa.Connection, tenant_id: str, *, daily: Decimal | None, monthly: Decimal | None, actor: str, reason: str
) -> spend_store.TenantBudget:
    """Set (or clear) a tenant's daily and monthly USD limits, with one OPS audit row of the change."""
    if not tenant_id.strip():
        raise InvalidInput("tenant id must not be blank")
    before = spend_store.tenant_budget(conn, tenant_id, lock=True)
    after = spend_store.set_tenant_budget(conn, tenant_id, daily_usd=daily, monthly_usd=monthly, updated_by=actor)
    ops_audit.add(
        conn,
        tenant_anchor(tenant_id),
        {
            "op": "tenant_budget_set",
            "tenantId": tenant_id,
            "at": now_iso(),
            "actor": actor,
            "reason": reason,
            "before": budget_json(before),
            "after": budget_json(after),
        },
    )
    return after


def budget_json(budget: spend_store.TenantBudget | None) -> dict[str, Any] | None:
    if budget is None:
        return None
    return {
        "tenantId": budget.tenant_id,
        "dailyUsd": usd(budget.daily_usd) if budget.daily_usd is not None else None,
        "monthlyUsd": usd(budget.monthly_usd) if budget.monthly_usd is not None else None,
        "updatedBy": budget.updated_by,
        "updatedAt": budget.updated_at.isoformat(),
    }


def show(conn: sa.Connection, tenant_id: str, now: datetime) -> dict[str, Any]:
    """A tenant's limits, its spend today and this month (UTC), what open reservations hold, and its audit."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    today, held = spend_store.tenant_spend(conn, tenant_id, day)
    month, _ = spend_store.tenant_spend(conn, tenant_id, day.replace(day=1))
    audit = ops_audit.list_for(conn, [tenant_anchor(tenant_id)], op="tenant_budget_set", limit=20)
    return {
        "tenantId": tenant_id,
        "budget": budget_json(spend_store.tenant_budget(conn, tenant_id)),
        "spentTodayUsd": usd(today),
        "spentThisMonthUsd": usd(month),
        "reservedUsd": usd(held),
        "audit": [row.inline for row in audit],
    }


def report(conn: sa.Connection, *, tenant_id: str | None, since: datetime | None) -> list[dict[str, Any]]:
    """``kodo ops spend``: calls, tokens and USD by tenant and model (charged, and priced for replayed calls)."""
    return [
        {
            "tenantId": line.group,
            "model": line.model,
            "calls": line.calls,
            "inputTokens": line.input_tokens,
            "outputTokens": line.output_tokens,
            "cachedTokens": line.cached_tokens,
            "costUsd": usd(line.cost_usd),
            "pricedUsd": usd(line.priced_usd),
        }
        for line in spend_store.lines_by_tenant(conn, tenant_id=tenant_id, since=since)
    ]
