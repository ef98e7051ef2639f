"""``kodo``: the command line. It parses argv, builds Settings once and hands over to ``kodo.main``.

This module is the root group and the list of command groups, one module each (``kodo.cli.<group>``); what
they share is ``kodo.cli.context`` (settings, and the database and DBOS client of ``kodo.main.ops_context``).
Each group loads the heavy modules (DBOS, FastAPI) inside its commands, so ``kodo --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from kodo.cli.agent import agent
from kodo.cli.chaos import chaos
from kodo.cli.check import check
from kodo.cli.context import command_settings as _settings  # the load tools' name for it (issue #25 moves them)
from kodo.cli.database import database
from kodo.cli.mcp import mcp_command
from kodo.cli.ops import ops
from kodo.cli.otlp import otlp
from kodo.cli.recipes import recipes
from kodo.cli.runs import runs
from kodo.cli.sandbox import sandbox
from kodo.cli.serve import api, up, worker
from kodo.cli.tenants import tenants
from kodo.cli.webhooks import webhooks
from kodo.errors import KodoError


@click.group()
@click.version_option(package_name="kodo")
def cli() -> None:
    """kodo: a durable control plane for agentic coding runs."""


def main() -> None:
    cli()


# --- the load tools, kodo soak and kodo bench: they move to kodo.cli.bench with issue #25 ---------------------


@cli.group()
def soak() -> None:
    """Bounded load tests against a running kodo on loopback."""


@soak.command("hitl")
@click.option("--n", "runs", type=click.IntRange(1, 5000), default=200, show_default=True, help="Runs to park.")
@click.option("--dupes", type=click.IntRange(1, 20), default=3, show_default=True, help="Duplicate replies per gate.")
@click.option("--partition", default="soak", show_default=True, help="The one partition every run uses.")
@click.option("--base", default=None, help="kodo's URL (loopback only); default http://127.0.0.1:$PORT.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=600, show_default=True)
def soak_hitl(runs: int, dupes: int, partition: str, base: str | None, timeout_s: float) -> None:
    """Park N runs at their plan gate, burst duplicate replies, report errors, ledger rows and latency."""
    import json

    from kodo.database import resolve_database_url
    from kodo.ops.soak import soak_hitl as run_soak
    from kodo.store import create_engine

    settings = _settings()
    engine = create_engine(resolve_database_url(settings.database_url, settings.home), pool_size=2)
    try:
        report = run_soak(
            base or f"http://127.0.0.1:{settings.port}",
            engine,
            runs=runs,
            duplicates=dupes,
            partition=partition,
            timeout_s=timeout_s,
        )
    except KodoError as error:
        raise click.ClickException(error.message) from error
    finally:
        engine.dispose()
    click.echo(json.dumps(report.as_json(), indent=2))
    if report.errors or report.succeeded != runs:
        sys.exit(1)


@cli.command()
@click.argument("scenario", type=click.Choice(["burst", "latency", "api", "hitl", "ceiling"]))
@click.option("--n", "runs", type=click.IntRange(1, 2000), default=50, show_default=True, help="Runs (or API loops).")
@click.option("--reps", "repetitions", type=click.IntRange(1, 10), default=3, show_default=True, help="Repetitions.")
@click.option("--partitions", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option(
    "--concurrency", type=click.IntRange(1, 64), default=4, show_default=True, help="API clients (burst: pollers)."
)
@click.option("--auto/--approve", "auto", default=False, help="autoApprove, or approve each plan as it appears.")
@click.option(
    "--think-ms", type=click.IntRange(0, 10000), default=0, show_default=True, help="api: pause per iteration."
)
@click.option("--against", type=click.Choice(["ceiling"]), default=None, help="burst: a baseline rep before each rep.")
@click.option(
    "--follow",
    type=click.Choice(["poll", "wait"]),
    default="poll",
    show_default=True,
    help="burst, latency: re-read each run's header (poll) or long-poll it (GET /api/runs/{id}?until=…).",
)
@click.option("--base", default=None, help="kodo's URL (loopback only); default http://127.0.0.1:$PORT.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=900, show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Also write the JSON here.")
def bench(scenario: str, base: str | None, out_path: str | None, **options: Any) -> None:
    """Benchmark a running kodo: burst | latency | api | hitl | ceiling (median of --reps repetitions)."""
    import json
    from functools import partial

    import httpx

    from kodo.database import resolve_database_url
    from kodo.main import dbos_client
    from kodo.ops.bench import run_bench
    from kodo.store import create_engine

    settings = _settings()
    target = base or f"http://127.0.0.1:{settings.port}"
    engine = create_engine(resolve_database_url(settings.database_url, settings.home), pool_size=2)
    try:
        connect = partial(dbos_client, settings, engine)  # called only if the ceiling runs
        report = run_bench(target, engine, settings, scenario=scenario, dbos_client=connect, **options)
    except KodoError as error:
        raise click.ClickException(error.message) from error
    except (httpx.HTTPError, TimeoutError, RuntimeError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    finally:
        engine.dispose()
    text = json.dumps(report, indent=2)
    click.echo(text)
    if out_path:
        Path(out_path).write_text(text + "\n")


cli.add_command(up)
cli.add_command(worker)
cli.add_command(api)
cli.add_command(database)
cli.add_command(agent)
cli.add_command(sandbox)
cli.add_command(ops)
cli.add_command(otlp)
cli.add_command(check)
cli.add_command(tenants)
cli.add_command(recipes)
cli.add_command(runs)
cli.add_command(chaos)
cli.add_command(webhooks)
cli.add_command(mcp_command)
