"""``kodo recipes list|import|export|promote|fixtures run``: recipe versions on the database."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from kodo.cli.context import ops_context


@click.group()
def recipes() -> None:
    """Recipe versions: list, import/export bundles, promote draft → candidate → stable, run fixtures."""


@recipes.command("list")
@click.argument("recipe_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def recipes_list(recipe_id: str | None, as_json: bool) -> None:
    """Every recipe (latest version, status, stable pointer), or every version of RECIPE_ID."""

    from kodo.store import recipe_versions
    from kodo.workflows import recipes as recipe_flows

    with ops_context(migrated=True) as context, context.engine.connect() as conn:
        if recipe_id is None:
            rows = recipe_flows.registry(conn)
            lines = [f"{r['id']}\t{r['latestV']}\t{r['status']}\tstable={r['stableRef'] or '-'}" for r in rows]
        else:
            rows = [recipe_flows.version_row(conn, v) for v in recipe_versions.list_versions(conn, recipe_id)]
            lines = [
                f"{r['id']}@{r['v']}\t{r['status']}\tevals={r['evalCount']}\tfixtures={r['fixtureCount']}\t{r['hash']}"
                for r in rows
            ]
    click.echo(json.dumps(rows, indent=2) if as_json else "\n".join(lines))


@recipes.command("import")
@click.argument("path", type=click.File("r"))
def recipes_import(path: Any) -> None:
    """Import a bundle file (or - for stdin) as drafts; a conflicting draft or stable version fails, nothing written."""

    from pydantic import ValidationError

    from kodo.workflows import recipes as recipe_flows
    from kodo.workflows.recipe_spec import RecipeBundle

    try:
        bundle = RecipeBundle.model_validate(json.load(path))
    except (json.JSONDecodeError, ValidationError) as error:
        raise click.ClickException(f"invalid recipe bundle: {error}") from error
    with ops_context(migrated=True) as context, context.engine.begin() as conn:
        summary, _created = recipe_flows.import_bundle(conn, bundle)
    for row in summary["versions"]:
        state = "imported" if row["created"] else "unchanged"
        click.echo(f"{row['id']}@{row['v']}\t{row['status']}\t{state}\t{row['hash']}")


@recipes.command("export")
@click.argument("recipe_id")
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Write here, not stdout.")
def recipes_export(recipe_id: str, out_path: str | None) -> None:
    """Print (or write) RECIPE_ID's versions as one canonical JSON bundle; it imports back unchanged."""
    from kodo.workflows import recipes as recipe_flows

    with ops_context(migrated=True) as context, context.engine.connect() as conn:
        text = recipe_flows.export_text(conn, recipe_id)
    if out_path:
        Path(out_path).write_text(text, encoding="utf-8")
    else:
        click.echo(text)


@recipes.command("promote")
@click.argument("ref")
@click.option("--to", "to", type=click.Choice(["candidate", "stable"]), default=None, help="Default: the next status.")
def recipes_promote(ref: str, to: str | None) -> None:
    """Promote ID@V one step (draft → candidate → stable); stable needs ≥ 1 eval check and ≥ 1 fixture."""
    from kodo.workflows import recipes as recipe_flows

    with ops_context(migrated=True) as context, context.engine.begin() as conn:
        version = recipe_flows.promote(conn, ref, to)
    click.echo(f"{version.ref}\t{version.status}")


@recipes.group("fixtures")
def recipe_fixtures() -> None:
    """A version's fixtures, run as real runs (a worker must be running: kodo up or kodo worker)."""


@recipe_fixtures.command("run")
@click.argument("ref")
@click.option("--trials", type=click.IntRange(1, 10), default=2, show_default=True, help="Runs per fixture.")
@click.option("--round", "round_no", type=click.IntRange(1, 1_000_000), default=1, show_default=True)
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=300, show_default=True)
def recipe_fixtures_run(ref: str, trials: int, round_no: int, timeout_s: float) -> None:
    """Fan ID@V's fixtures out (TRIALS runs each), wait, print verdicts; exit 1 unless every fixture passes."""

    from kodo.workflows.fixtures import run_fixtures

    with ops_context(migrated=True) as context:
        report = run_fixtures(
            context.engine,
            context.client,
            context.settings,
            ref,
            trials=trials,
            round_no=round_no,
            timeout_s=timeout_s,
        )
    click.echo(json.dumps(report, indent=2))
    if report["summary"]["pass"] != len(report["fixtures"]):
        sys.exit(1)
