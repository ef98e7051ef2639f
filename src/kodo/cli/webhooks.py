"""``kodo webhooks``: subscriptions and deliveries, on the database directly (the operator's own machine).

The same rules as ``/api/webhooks``: a target must be loopback or in ``KODO_WEBHOOK_ALLOWED_HOSTS``; a
subscription made here is tenant ``*`` (every run) unless ``--tenant`` names one.
"""

from __future__ import annotations

import json

import click

from kodo.cli.context import ops_context
from kodo.store import webhooks as store


@click.group()
def webhooks() -> None:
    """Webhooks: subscribe URLs to run and gate events; list, remove; see and redeliver deliveries."""


@webhooks.command("add")
@click.argument("url")
@click.option(
    "--event",
    "events",
    multiple=True,
    required=True,
    type=click.Choice(list(store.EVENT_TYPES)),
    help="An event type to send (repeat for more).",
)
@click.option("--tenant", default=None, help="Only this tenant's runs (partitions TENANT and TENANT:*); default all.")
@click.option("--description", default=None, help="A note shown in listings.")
def add(url: str, events: tuple[str, ...], tenant: str | None, description: str | None) -> None:
    """Subscribe URL; prints the subscription as JSON, with its signing secret (shown only now)."""
    from kodo.api.webhooks import subscription_row
    from kodo.workflows import webhooks as flows

    with ops_context(migrated=True) as context:
        settings = context.settings
        with context.engine.begin() as conn:
            created, secret = flows.subscribe(
                conn,
                settings,
                tenant=tenant or "*",
                partitions=None if tenant is None else [tenant, f"{tenant}:%"],
                url=url,
                events=list(events),
                description=description,
                created_by="cli",
            )
    click.echo(json.dumps(subscription_row(created, secret=secret), indent=2))


@webhooks.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(as_json: bool) -> None:
    """Live subscriptions (without their secrets)."""
    from kodo.api.webhooks import subscription_row

    with ops_context(migrated=True) as context, context.engine.connect() as conn:
        rows = [subscription_row(s) for s in store.list_subscriptions(conn, None)]
    lines = [f"{r['id']}\t{r['tenant']}\t{','.join(r['events'])}\t{r['url']}" for r in rows]
    click.echo(json.dumps(rows, indent=2) if as_json else "\n".join(lines))


@webhooks.command("remove")
@click.argument("subscription_id")
def remove(subscription_id: str) -> None:
    """Stop a subscription (its deliveries stay on record)."""
    with ops_context(migrated=True) as context, context.engine.begin() as conn:
        if not store.delete_subscription(conn, subscription_id, None):
            raise click.ClickException(f"webhook subscription not found: {subscription_id}")
    click.echo(f"{subscription_id}\tremoved")


@webhooks.command("deliveries")
@click.option("--state", type=click.Choice(list(store.DELIVERY_STATES)), default=None, help="Only this state.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def deliveries(state: str | None, limit: int, as_json: bool) -> None:
    """Deliveries, newest first (``--state dead``: those that ran out of tries)."""
    from kodo.api.webhooks import delivery_row

    with ops_context(migrated=True) as context, context.engine.connect() as conn:
        rows = [
            delivery_row(d)
            for d in store.list_deliveries(conn, tenant=None, state=state, subscription_id=None, limit=limit)
        ]
    lines = [
        f"{r['id']}\t{r['state']}\t{r['eventType']}\tattempts={r['attempts']}\t{r['lastError'] or ''}" for r in rows
    ]
    click.echo(json.dumps(rows, indent=2) if as_json else "\n".join(lines))


@webhooks.command("redeliver")
@click.argument("delivery_id")
def redeliver(delivery_id: str) -> None:
    """Send a dead (or delivered) delivery again, same webhook-id (a worker must be running to send it)."""
    from kodo.workflows import webhooks as flows

    with ops_context(migrated=True) as context, context.engine.begin() as conn:
        workflow_id = flows.redeliver(conn, context.client, context.settings, delivery_id, None)
    click.echo(f"{delivery_id}\tpending\t{workflow_id}")
