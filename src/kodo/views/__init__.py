"""The read model: what kodo's answers and pages show of a run — its header, step rows, gates, review
cards and artifact refs — built by typed code from store records.

Route modules (``kodo.api``) and console pages (``kodo.ui``) import it, never each other; it reads
through ``kodo.store`` (and the few ``kodo.workflows``/``kodo.ops`` projections a header needs) and never
writes. Noun modules: :mod:`kodo.views.runs`, :mod:`kodo.views.gates`, :mod:`kodo.views.reviews`,
:mod:`kodo.views.artifacts`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol, TypeVar

import sqlalchemy as sa

from kodo.settings import Role, Settings

T = TypeVar("T")


class Reads(Protocol):
    """Anything that lends a read connection (the API's context does)."""

    def read(self) -> AbstractContextManager[sa.Connection]: ...


class Serving(Reads, Protocol):
    """A serving process's view of itself: its settings and role (the header's posture) and its reads."""

    @property
    def settings(self) -> Settings: ...

    @property
    def role(self) -> Role: ...


def epoch_ms(value: datetime | None) -> int | None:
    """A moment as epoch milliseconds, the unit of every time in kodo's JSON."""
    return None if value is None else int(value.timestamp() * 1000)


def read_by_key(reads: Reads, read: Callable[[sa.Connection, str], T], key: str) -> T:
    """One read by key on a read connection (for async routes: call it through ``run_in_threadpool``)."""
    with reads.read() as conn:
        return read(conn, key)
