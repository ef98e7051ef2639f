"""Statements built once: SQLAlchemy parses a ``text()`` statement's bind parameters, and computes its cache key,
each time one is built (about 40 µs), so the store builds each distinct statement once and reuses it. The cache
is bounded (``CACHED_STATEMENTS``); a statement's text is its key."""

from __future__ import annotations

from functools import lru_cache

import sqlalchemy as sa

CACHED_STATEMENTS = 2048


@lru_cache(maxsize=CACHED_STATEMENTS)
def sql(statement: str) -> sa.TextClause:
    """The ``sa.text`` of ``statement``, built the first time it is asked for (immutable: safe to share)."""
    return sa.text(statement)
