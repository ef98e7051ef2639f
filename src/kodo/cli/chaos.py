"""``kodo chaos --iterations N``: kill -9 kodo's processes (or restart Postgres) under load, then prove nothing
was lost or done twice (see :mod:`kodo.chaos.driver`)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from kodo.chaos import KINDS


@click.command("chaos")
@click.option("--iterations", type=click.IntRange(1, 1000), default=10, show_default=True, help="Crashes to inflict.")
@click.option(
    "--time-limit",
    "time_limit_s",
    type=click.FloatRange(10, 6 * 3600),
    default=1800,
    show_default=True,
    help="No iteration starts after this many seconds.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Picks the fault points (same seed, same plan).")
@click.option("--fan-out", type=click.IntRange(1, 8), default=2, show_default=True, help="Fan-out runs per iteration.")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(KINDS),
    help="Kinds of crash, in turn (default: all four).",
)
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None, help="Its KODO_HOME (temp).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Also write the rows as JSON.")
def chaos(
    iterations: int,
    time_limit_s: float,
    seed: int,
    fan_out: int,
    kinds: tuple[str, ...],
    home: Path | None,
    out_path: str | None,
) -> None:
    """Start a kodo of its own (own KODO_HOME and embedded Postgres, loopback), crash it at armed fault points
    under a mixed load, restart it, and check: every run at rest, no oracle rows, the ledger equal to the
    commands that really ran. Prints a table per fault point; exits 1 on any duplicate, lost run, oracle row
    or untracked command."""
    from kodo.chaos import driver as chaos_driver

    root = home or Path(tempfile.mkdtemp(prefix="kodo-chaos-"))
    click.echo(f"kodo chaos: {iterations} iteration(s), home {root}", err=True)
    report = chaos_driver.run(
        root,
        iterations=iterations,
        time_limit_s=time_limit_s,
        seed=seed,
        fan_out=fan_out,
        kinds=kinds or KINDS,
        progress=lambda: click.echo(".", nl=False, err=True),
    )
    click.echo("", err=True)
    click.echo(chaos_driver.table(report))
    if report.stopped_early:
        click.echo(f"stopped after {len(report.iterations)} iteration(s): {report.stopped_early}")
    if out_path:
        Path(out_path).write_text(json.dumps(report.rows(), indent=2) + "\n", encoding="utf-8")
    if not report.clean:
        raise SystemExit(1)
