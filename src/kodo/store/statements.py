"""Statements built once: SQLAlchemy parses a ``text()`` statement's bind parameters, and computes its cache key,
each time one is built (about 40 µs), so the store builds each distinct statement once and reuses it. The cache
is bounded (``CACHED_STATEMENTS``); a statement's text is its key."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

CACHED_STATEMENTS = 2048


@lru_cache(maxsize=CACHED_STATEMENTS)
def sql(statement: str) -> sa.TextClause:
    """The ``sa.text`` of ``statement``, built the first time it is asked for (immutable: safe to share)."""
    return sa.text(statement)


_PSYCOPG = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]


@lru_cache(maxsize=CACHED_STATEMENTS)
def pyformat(statement: str) -> str:
    """``statement`` as psycopg itself takes it (``:name`` → ``%(name)s``, a literal ``%`` doubled), compiled by
    SQLAlchemy's own psycopg dialect: for the few reads made on an asyncio connection (``AsyncConnections``)."""
    return str(sql(statement).compile(dialect=_PSYCOPG))


class Columns(Protocol):
    """A result row: each column as an attribute, and all of them by name in ``_mapping`` (an SQLAlchemy
    ``Row`` is one; ``kodo.store.async_connections.ColumnRow`` is one for psycopg's rows)."""

    @property
    def _mapping(self) -> Mapping[Any, Any]: ...

    def __getattr__(self, name: str) -> Any: ...
