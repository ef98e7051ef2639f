"""``kodo tenants budget set|show``: a tenant's spend limits per UTC day and month (docs/budgets.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from kodo.cli.context import ops_context
from kodo.errors import KodoError


@click.group()
def tenants() -> None:
    """Tenants: spend limits (kodo tenants budget set|show)."""


@tenants.group()
def budget() -> None:
    """A tenant's USD spend limits per UTC day and per UTC month; reaching one parks its runs' agent calls."""


@budget.command("set")
@click.argument("tenant")
@click.option("--daily", default=None, help="USD per UTC day (none: no daily limit).")
@click.option("--monthly", default=None, help="USD per UTC month (none: no monthly limit).")
@click.option("--actor", required=True, help="Who sets it (audited).")
@click.option("--reason", required=True, help="Why (audited).")
def budget_set(tenant: str, daily: str | None, monthly: str | None, actor: str, reason: str) -> None:
    """Set TENANT's limits; an option left out clears that limit. Prints the limits as JSON."""
    from kodo.ops import spend

    try:
        daily_usd, monthly_usd = spend.parse_usd(daily, "--daily"), spend.parse_usd(monthly, "--monthly")
    except KodoError as error:
        raise click.BadParameter(error.message) from error
    if daily_usd is None and monthly_usd is None and daily is None and monthly is None:
        raise click.UsageError("give --daily and/or --monthly (none clears a limit)")
    with ops_context(migrated=True) as context, context.engine.begin() as conn:
        after = spend.set_budget(conn, tenant, daily=daily_usd, monthly=monthly_usd, actor=actor, reason=reason)
    click.echo(json.dumps(spend.budget_json(after), sort_keys=True))


@budget.command("show")
@click.argument("tenant")
def budget_show(tenant: str) -> None:
    """TENANT's limits, spend today and this month (UTC), open reservations and the audit of changes, as JSON."""
    from kodo.ops import spend

    with ops_context(migrated=True) as context, context.engine.connect() as conn:
        shown = spend.show(conn, tenant, datetime.now(UTC))
    click.echo(json.dumps(shown, indent=2, sort_keys=True, default=str))
