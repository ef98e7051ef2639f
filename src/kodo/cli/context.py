"""What every command group shares: settings from the environment, and the database and DBOS client of
``kodo.main.ops_context``, with kodo's errors turned into clean CLI errors (exit 1, one line, no traceback).

The heavy modules (``kodo.main`` and, through it, DBOS and FastAPI) load inside the functions, when a command
runs, so ``kodo --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from kodo.errors import KodoError
from kodo.settings import Settings, load_settings

if TYPE_CHECKING:
    from kodo.ops.context import Ops


@contextmanager
def clean_errors() -> Iterator[None]:
    """A ``KodoError`` inside becomes a clean CLI error: its message on one line, exit 1."""
    try:
        yield
    except KodoError as error:
        raise click.ClickException(error.message) from error


def command_settings() -> Settings:
    """Settings from the environment, built once per command; a bad value is a clean CLI error."""
    with clean_errors():
        return load_settings()


@contextmanager
def ops_context(*, migrated: bool, settings: Settings | None = None) -> Iterator[Ops]:
    """``kodo.main.ops_context`` for one command: the engine and DBOS client (migrated first when ``migrated``),
    released at the end; a ``KodoError`` inside becomes a clean CLI error."""
    from kodo import main

    with clean_errors(), main.ops_context(settings or command_settings(), migrated=migrated) as context:
        yield context
