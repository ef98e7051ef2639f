"""The database of a CLI command: settings and an engine on the migrated database, with kodo's errors turned
into clean CLI errors (every command group that reads or writes the database opens it here)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
import sqlalchemy as sa

from kodo.errors import KodoError
from kodo.settings import Settings, load_settings


@contextmanager
def migrated() -> Iterator[tuple[Settings, sa.Engine]]:
    """Settings from the environment and an engine on the migrated database (disposed at the end)."""
    from kodo.main import prepare_database

    try:
        settings = load_settings()
        _url, engine = prepare_database(settings)
    except KodoError as error:
        raise click.ClickException(error.message) from error
    try:
        yield settings, engine
    except KodoError as error:
        raise click.ClickException(error.message) from error
    finally:
        engine.dispose()
