"""``store.statements.sql``: each distinct statement is built once and reused, and the cache is bounded."""

from __future__ import annotations

import sqlalchemy as sa

from kodo.store import statements


def test_a_statement_is_built_once_and_reused() -> None:
    """The same text gives the same TextClause (parsed once); another text, another one."""
    first = statements.sql("SELECT :a AS a -- statements test")
    assert isinstance(first, sa.TextClause)
    assert statements.sql("SELECT :a AS a -- statements test") is first
    assert statements.sql("SELECT :b AS b -- statements test") is not first
    assert set(first.compile().params) == {"a"}


def test_the_cache_is_bounded() -> None:
    """Distinct statements past the bound evict the oldest: the cache never holds more than its bound."""
    for n in range(statements.CACHED_STATEMENTS + 50):
        statements.sql(f"SELECT {n} AS n -- bound test")
    info = statements.sql.cache_info()
    assert info.maxsize == statements.CACHED_STATEMENTS
    assert info.currsize <= statements.CACHED_STATEMENTS
