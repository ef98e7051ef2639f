"""``kodo runs``: a run's change — ``diff`` prints what the plan gate reviewed, ``deliver`` sends a finished
run's change to its source repository (branch ``kodo/<runId>``, or a format-patch artifact)."""

from __future__ import annotations

import json

import click

from kodo.cli.context import ops_context


@click.group()
def runs() -> None:
    """A run's change: print its diff, deliver it to its source repository."""


@runs.command("diff")
@click.argument("run")
def runs_diff(run: str) -> None:
    """Print RUN's diff (run id or workflow id) against its base commit, as reviewed at the plan gate."""
    from kodo.views.reviews import run_diff

    with ops_context(migrated=True) as context, context.engine.connect() as conn:
        _run, text = run_diff(conn, run)
    click.echo(text, nl=False)


@runs.command("deliver")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print the delivery as JSON.")
def runs_deliver(run: str, as_json: bool) -> None:
    """Deliver a succeeded RUN: a commit on branch kodo/<runId> of its source repository (exactly once)."""
    from kodo.workflows import delivery

    with ops_context(migrated=True) as context:
        outcome = delivery.deliver(context.engine, context.settings, run, "cli")
    if as_json:
        click.echo(json.dumps(outcome, sort_keys=True))
    elif outcome["status"] != "delivered":
        error = outcome["error"] or {}
        raise click.ClickException(f"delivery failed: {error.get('message', 'unknown error')}")
    elif outcome["mode"] == "branch":
        click.echo(f"{outcome['branch']}\t{outcome['commit']}")
    else:
        click.echo(f"patch\t{outcome['artifactUri']}")
    if outcome["status"] != "delivered":
        raise SystemExit(1)
