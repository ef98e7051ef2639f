"""``kodo bench`` and ``kodo soak``: bounded load tools against a running server on loopback.

``kodo bench burst|latency|api`` also measure any server that speaks the same HTTP API (the predecessor):
with ``--base`` pointing at it, what needs kodo's database (DBOS operations, commits, worker executors,
the oracles) is skipped, so one driver measures both, alternating.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from kodo.cli.context import command_settings
from kodo.errors import KodoError
from kodo.settings import Settings


@click.group()
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
    from kodo.bench.soak import soak_hitl as run_soak
    from kodo.database import resolve_database_url
    from kodo.store import create_engine

    settings = command_settings()
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


@click.group()
def bench() -> None:
    """Benchmark a running server on loopback (median of --reps repetitions; JSON on stdout)."""


def _options(command: Callable[..., None]) -> Callable[..., None]:
    """The options every scenario shares."""
    for option in reversed(
        [
            click.option("--n", "runs", type=click.IntRange(1, 2000), default=50, show_default=True, help="Runs."),
            click.option("--reps", "repetitions", type=click.IntRange(1, 10), default=3, show_default=True),
            click.option("--partitions", type=click.IntRange(1, 64), default=8, show_default=True),
            click.option(
                "--concurrency", type=click.IntRange(1, 64), default=4, show_default=True, help="API clients (pollers)."
            ),
            click.option("--auto/--approve", "auto", default=False, help="autoApprove, or approve plans on sight."),
            click.option("--base", default=None, help="The server's URL (loopback); default http://127.0.0.1:$PORT."),
            click.option(
                "--postgres-port",
                type=click.IntRange(1, 65535),
                default=None,
                help="The server's Postgres port, for its CPU (default: kodo's database; else every Postgres).",
            ),
            click.option("--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=900, show_default=True),
            click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Also write here."),
        ]
    ):
        command = option(command)
    return command


_FOLLOW = click.option(
    "--follow",
    type=click.Choice(["poll", "wait"]),
    default="poll",
    show_default=True,
    help="Re-read each run's header (poll) or long-poll it (GET /api/runs/{id}?until=…; kodo only).",
)


def _run(scenario: str, base: str | None, out_path: str | None, postgres_port: int | None, **options: Any) -> None:
    """Run one scenario against ``base`` (kodo's own, or any server speaking the same API) and print its report."""
    from functools import partial

    import httpx

    from kodo.bench.bench import run_bench
    from kodo.bench.soak import require_loopback

    settings = command_settings()
    target = base or f"http://127.0.0.1:{settings.port}"
    engine = None
    try:
        require_loopback(target)  # before the first request
        health = httpx.get(f"{target}/healthz", timeout=5).json()
        if isinstance(health, dict) and "role" in health:  # kodo: its database gives the counts and oracles
            from urllib.parse import urlparse

            from kodo.database import resolve_database_url
            from kodo.store import create_engine

            url = resolve_database_url(settings.database_url, settings.home)
            engine = create_engine(url, pool_size=2)
            if postgres_port is None:
                postgres_port = urlparse(url.replace("postgresql+psycopg", "postgresql")).port or 5432
        connect = partial(_dbos_client, settings, engine)  # called only if the ceiling runs
        report = run_bench(
            target, engine, settings, scenario=scenario, dbos_client=connect, postgres_port=postgres_port, **options
        )
    except KodoError as error:
        raise click.ClickException(error.message) from error
    except (httpx.HTTPError, TimeoutError, RuntimeError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    finally:
        if engine is not None:
            engine.dispose()
    _publish(report, out_path, ((f"repetition {n + 1}", rep) for n, rep in enumerate(report["repetitions"])))


def _publish(report: dict[str, Any], out_path: str | None, labelled: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """Print the report (and write it to ``out_path``), then fail if a repetition left an oracle violated:
    the figures stay, the exit status says it failed."""
    from kodo.bench.bench import violated

    text = json.dumps(report, indent=2)
    click.echo(text)
    if out_path:
        Path(out_path).write_text(text + "\n")
    broken = violated(labelled)
    if broken:
        raise click.ClickException("SQL oracles violated after the benchmark: " + "; ".join(broken))


def _dbos_client(settings: Settings, engine: Any) -> Any:
    from kodo.main import dbos_client

    return dbos_client(settings, engine)


@bench.command("burst")
@_options
@_FOLLOW
@click.option("--poll-ms", type=click.IntRange(0, 5000), default=200, show_default=True, help="Re-read each run.")
@click.option("--against", type=click.Choice(["ceiling"]), default=None, help="A ceiling repetition before each.")
def bench_burst(**options: Any) -> None:
    """N runs over P partitions, followed to their end (plans approved as they appear): runs/s, API polls/s."""
    _run("burst", **options)


@bench.command("latency")
@_options
@_FOLLOW
def bench_latency(**options: Any) -> None:
    """One run at a time: start → WAITING_INPUT, approve → SUCCESS, start → SUCCESS (ms); --auto: start → SUCCESS of
    runs that approve themselves."""
    _run("latency", **options)


@bench.command("api")
@_options
@click.option("--think-ms", type=click.IntRange(0, 10000), default=0, show_default=True, help="Pause per iteration.")
def bench_api(**options: Any) -> None:
    """The predecessor's k6 iteration at fixed concurrency (per-request ms, overall and per route)."""
    _run("api", **options)


@bench.command("hitl")
@_options
def bench_hitl(**options: Any) -> None:
    """Reply → resume latency of parked runs."""
    _run("hitl", **options)


@bench.command("ceiling")
@_options
@click.option(
    "--shape",
    type=click.Choice(["child", "inline"]),
    default="child",
    show_default=True,
    help="child: a run's skeleton today; inline: its continuation on sbxQ runs its one task, no child workflow.",
)
def bench_ceiling(**options: Any) -> None:
    """The burst as the run's bare DBOS skeleton in kodo's worker: the baseline to hold the burst against."""
    _run("ceiling", **options)


@bench.command("scale")
@click.option("--workers", default="1,2,4", show_default=True, help="Worker process counts (kodo up --workers K).")
@click.option("--n", "runs", type=click.IntRange(1, 2000), default=200, show_default=True, help="Runs per burst.")
@click.option("--reps", "repetitions", type=click.IntRange(1, 10), default=3, show_default=True)
@click.option("--partitions", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True, help="Pollers.")
@click.option("--poll-ms", type=click.IntRange(0, 5000), default=200, show_default=True, help="Re-read each run.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=900, show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Also write the JSON here.")
def bench_scale(workers: str, out_path: str | None, **options: Any) -> None:
    """The burst against a fresh ``kodo up --workers K`` per K and repetition (alternating): the curve, and
    what bounds it."""
    from kodo.bench.scale import run_scale

    try:
        counts = tuple(int(part) for part in workers.split(","))
    except ValueError as error:
        raise click.BadParameter("a comma-separated list of counts, e.g. 1,2,4", param_hint="--workers") from error
    try:
        report = run_scale(command_settings(), workers=counts, **options)
    except KodoError as error:
        raise click.ClickException(error.message) from error
    except (TimeoutError, RuntimeError) as error:
        raise click.ClickException(str(error)) from error
    labelled = (
        (f"{count} worker(s), repetition {n + 1}", rep)
        for count, reps in report["repetitions"].items()
        for n, rep in enumerate(reps)
    )
    _publish(report, out_path, labelled)
