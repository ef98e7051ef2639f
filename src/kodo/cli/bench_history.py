"""``kodo bench history seed|measure``: a long history in the database, and the hot reads timed over it
(kodo.bench.history). Loopback targets only; every loop bounded in count and time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from kodo.cli.context import ops_context

BASE = "http://127.0.0.1:3001"


def _emit(body: Any, out: Path | None) -> None:
    text = json.dumps(body, indent=2, sort_keys=True)
    click.echo(text)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")


@click.group("history")
def history() -> None:
    """Seed a database with a long history (finished and parked runs), then time the hot reads over it."""


@history.command("seed")
@click.option("--finished", type=click.IntRange(0, 1_000_000), required=True, help="Finished runs wanted in all.")
@click.option("--parked", type=click.IntRange(0, 100_000), required=True, help="Runs parked at a gate wanted in all.")
@click.option("--base", default=BASE, show_default=True, help="The running kodo (loopback) that starts runs.")
@click.option("--batch", type=click.IntRange(1, 10_000), default=1000, show_default=True, help="Clones per commit.")
@click.option("--spacing-s", type=click.FloatRange(0.001, 86400), default=25.0, show_default=True)
@click.option("--timeout", type=click.FloatRange(1, 86400), default=3600.0, show_default=True, help="Seconds.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the JSON report here.")
def seed_command(
    finished: int, parked: int, base: str, batch: int, spacing_s: float, timeout: float, out: Path | None
) -> None:
    """Add what is missing for FINISHED finished and PARKED parked runs (resumable: run it again to go on)."""
    from kodo import faults
    from kodo.bench import history as driver

    with ops_context(migrated=True) as context, driver.http_client(base, 8) as http:
        settings, engine = context.settings, context.engine
        faults.arm(settings.fault_points)  # tests kill a seed part-way (history.clone_batch)
        report = driver.seed(
            engine,
            http,
            finished=finished,
            parked=parked,
            batch=batch,
            spacing_s=spacing_s,
            timeout_s=timeout,
            progress=lambda line: click.echo(line, err=True),
        )
    _emit(report, out)


@history.command("measure")
@click.option("--base", default=BASE, show_default=True, help="The running kodo (loopback) to measure.")
@click.option(
    "--requests", type=click.IntRange(0, 10_000), default=200, show_default=True, help="Per read (0: only the burst)."
)
@click.option("--burst", type=click.IntRange(0, 2_000), default=100, show_default=True, help="Auto-approved runs.")
@click.option("--baseline", type=click.FloatRange(0.001), default=None, help="Empty-database burst runs/s.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the JSON report here.")
def measure_command(base: str, requests: int, burst: int, baseline: float | None, out: Path | None) -> None:
    """p50/p95 of each hot read over REQUESTS requests, then a burst's runs/s (÷ BASELINE when given)."""
    from kodo.bench import history as driver

    with ops_context(migrated=True) as context, driver.http_client(base, 16) as http:
        engine = context.engine
        result = driver.measure(engine, http, requests=requests, burst=burst, baseline=baseline)
    _emit(result, out)
