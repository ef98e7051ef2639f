"""Spend: what agent calls used (``app.opencode_calls``), what is held for calls in flight
(``app.spend_reservations``), and tenants' spend limits (``app.tenant_budgets``).

A reservation is a row, taken with the run row locked (and the tenant's budget row, when it has one), so
two concurrent calls of one run, or of one tenant, see each other's holds and cannot overspend together.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from kodo.store.statements import Columns, sql


@dataclass(frozen=True, slots=True, kw_only=True)
class Charge:
    """The usage of one ledgered call: tokens, what it was charged and what it cost at the price table."""

    model: str | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: Decimal
    priced_usd: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpend:
    """A run's settled spend (charged calls) and what its open reservations hold."""

    tokens: int
    cost_usd: Decimal
    reserved_tokens: int
    reserved_usd: Decimal
    priced_usd: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantBudget:
    tenant_id: str
    daily_usd: Decimal | None
    monthly_usd: Decimal | None
    updated_by: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class SpendLine:
    """Spend of one (step or tenant, model) group."""

    group: str
    model: str | None
    calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: Decimal
    priced_usd: Decimal


def reserve(
    conn: sa.Connection,
    *,
    op_key: str,
    run_id: str,
    tenant_id: str | None,
    step_id: str,
    model: str,
    tokens: int,
    cost_usd: Decimal,
) -> bool:
    """Hold a call's maximum (once per op key); returns whether this call took the hold."""
    taken = conn.execute(
        sql(
            "INSERT INTO app.spend_reservations (id, op_key, run_id, tenant_id, step_id, model, tokens, cost_usd) "
            "VALUES (:id, :k, :r, :t, :s, :m, :tokens, :cost) ON CONFLICT (op_key) DO NOTHING RETURNING id"
        ),
        {
            "id": "spres_" + secrets.token_hex(8),
            "k": op_key,
            "r": run_id,
            "t": tenant_id,
            "s": step_id,
            "m": model,
            "tokens": tokens,
            "cost": cost_usd,
        },
    ).first()
    return taken is not None


def close(conn: sa.Connection, op_key: str, state: str) -> None:
    """Settle (the call was ledgered) or release (it was not made) the op key's open reservation."""
    conn.execute(
        sql(
            "UPDATE app.spend_reservations SET state = :state, closed_at = clock_timestamp() "
            "WHERE op_key = :k AND state = 'reserved'"
        ),
        {"k": op_key, "state": state},
    )


def release_run(conn: sa.Connection, run_id: str) -> int:
    """Release every open reservation of a run (it failed, parked or ended between reserve and call)."""
    result = conn.execute(
        sql(
            "UPDATE app.spend_reservations SET state = 'released', closed_at = clock_timestamp() "
            "WHERE run_id = :r AND state = 'reserved'"
        ),
        {"r": run_id},
    )
    return int(result.rowcount or 0)


def open_reservation(conn: sa.Connection, op_key: str) -> bool:
    found = conn.execute(
        sql("SELECT 1 FROM app.spend_reservations WHERE op_key = :k AND state = 'reserved'"), {"k": op_key}
    ).first()
    return found is not None


# A run's spend: two aggregates of ``{run}`` (an id expression) joined as ``RUN_SPEND_FROM`` and read as
# ``RUN_SPEND_COLUMNS``. ``run_spend`` reads them alone; the run header's one statement
# (``durable_status.run_with_durability``) reads them beside the run row.
RUN_SPEND_FROM = (
    "LATERAL (SELECT coalesce(sum(input_tokens + output_tokens) FILTER (WHERE mode = 'live'), 0) AS tokens, "
    "coalesce(sum(cost_usd), 0) AS cost, coalesce(sum(priced_usd), 0) AS priced "
    "FROM app.opencode_calls WHERE run_id = {run}) AS spend_c, "
    "LATERAL (SELECT coalesce(sum(tokens), 0) AS tokens, coalesce(sum(cost_usd), 0) AS cost "
    "FROM app.spend_reservations WHERE run_id = {run} AND state = 'reserved') AS spend_h"
)
RUN_SPEND_COLUMNS = (
    "spend_c.tokens AS spend_tokens, spend_c.cost AS spend_cost, spend_c.priced AS spend_priced, "
    "spend_h.tokens AS spend_held_tokens, spend_h.cost AS spend_held_cost"
)


def spend_of(row: Columns) -> RunSpend:
    """The RunSpend of a row that carries ``RUN_SPEND_COLUMNS``."""
    return RunSpend(
        tokens=int(row.spend_tokens),
        cost_usd=Decimal(row.spend_cost),
        reserved_tokens=int(row.spend_held_tokens),
        reserved_usd=Decimal(row.spend_held_cost),
        priced_usd=Decimal(row.spend_priced),
    )


def run_spend(conn: sa.Connection, run_id: str) -> RunSpend:
    """A run's settled spend and open holds, in one statement."""
    statement = f"SELECT {RUN_SPEND_COLUMNS} FROM {RUN_SPEND_FROM.format(run=':r')}"
    return spend_of(conn.execute(sql(statement), {"r": run_id}).one())


def tenant_spend(conn: sa.Connection, tenant_id: str, since: datetime) -> tuple[Decimal, Decimal]:
    """(charged since ``since``, held by open reservations) of a tenant, in one statement."""
    row = conn.execute(
        sql(
            "SELECT (SELECT coalesce(sum(cost_usd), 0) FROM app.opencode_calls "
            "WHERE tenant_id = :t AND cost_usd > 0 AND created_at >= :since) AS spent, "
            "(SELECT coalesce(sum(cost_usd), 0) FROM app.spend_reservations "
            "WHERE tenant_id = :t AND state = 'reserved') AS held"
        ),
        {"t": tenant_id, "since": since},
    ).one()
    return Decimal(row.spent), Decimal(row.held)


def tenant_budget(conn: sa.Connection, tenant_id: str, *, lock: bool = False) -> TenantBudget | None:
    row = conn.execute(
        sql("SELECT * FROM app.tenant_budgets WHERE tenant_id = :t" + (" FOR UPDATE" if lock else "")),
        {"t": tenant_id},
    ).first()
    return None if row is None else TenantBudget(**dict(row._mapping))


def set_tenant_budget(
    conn: sa.Connection, tenant_id: str, *, daily_usd: Decimal | None, monthly_usd: Decimal | None, updated_by: str
) -> TenantBudget:
    conn.execute(
        sql(
            "INSERT INTO app.tenant_budgets (tenant_id, daily_usd, monthly_usd, updated_by) VALUES (:t, :d, :m, :by) "
            "ON CONFLICT (tenant_id) DO UPDATE SET daily_usd = EXCLUDED.daily_usd, monthly_usd = EXCLUDED.monthly_usd, "
            "updated_by = EXCLUDED.updated_by, updated_at = clock_timestamp()"
        ),
        {"t": tenant_id, "d": daily_usd, "m": monthly_usd, "by": updated_by},
    )
    found = tenant_budget(conn, tenant_id)
    assert found is not None
    return found


def lines_by_step(conn: sa.Connection, run_id: str) -> list[SpendLine]:
    """A run's spend by step and model, in step order of first call."""
    return _lines(
        conn,
        "SELECT step_id AS grp, model, count(*) AS calls, sum(input_tokens) AS input_tokens, "
        "sum(output_tokens) AS output_tokens, sum(cached_tokens) AS cached_tokens, sum(cost_usd) AS cost_usd, "
        "sum(priced_usd) AS priced_usd FROM app.opencode_calls WHERE run_id = :r "
        "GROUP BY step_id, model ORDER BY min(created_at), model",
        {"r": run_id},
    )


def lines_by_tenant(conn: sa.Connection, *, tenant_id: str | None, since: datetime | None) -> list[SpendLine]:
    """Spend by tenant and model (``kodo ops spend``), optionally one tenant's, optionally since a time."""
    return _lines(
        conn,
        "SELECT coalesce(tenant_id, '-') AS grp, model, count(*) AS calls, sum(input_tokens) AS input_tokens, "
        "sum(output_tokens) AS output_tokens, sum(cached_tokens) AS cached_tokens, sum(cost_usd) AS cost_usd, "
        "sum(priced_usd) AS priced_usd FROM app.opencode_calls "
        "WHERE (CAST(:t AS text) IS NULL OR tenant_id = :t) "
        "AND (CAST(:since AS timestamptz) IS NULL OR created_at >= :since) "
        "GROUP BY 1, model ORDER BY 1, model",
        {"t": tenant_id, "since": since},
    )


def _lines(conn: sa.Connection, query: str, params: dict[str, Any]) -> list[SpendLine]:
    return [
        SpendLine(
            group=row.grp,
            model=row.model,
            calls=int(row.calls),
            input_tokens=int(row.input_tokens),
            output_tokens=int(row.output_tokens),
            cached_tokens=int(row.cached_tokens),
            cost_usd=Decimal(row.cost_usd),
            priced_usd=Decimal(row.priced_usd),
        )
        for row in conn.execute(sql(query), params)
    ]


def approved_limits(conn: sa.Connection, run_id: str, generation: int) -> dict[str, Any]:
    """The limits given by the run's approved ``budget`` gates of this generation, newest first wins."""
    rows = conn.execute(
        sql(
            "SELECT result->'payload' AS payload FROM app.human_gates WHERE run_id = :r AND generation = :g "
            "AND purpose = 'budget' AND decision->>'decision' = 'yes' ORDER BY resolved_at"
        ),
        {"r": run_id, "g": generation},
    )
    limits: dict[str, Any] = {}
    for row in rows:
        payload = row.payload if isinstance(row.payload, dict) else {}
        limits.update({key: payload[key] for key in ("maxTokens", "maxCostUsd") if key in payload})
    return limits
