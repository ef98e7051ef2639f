"""The database's clock: the one time that row timestamps (``clock_timestamp()`` defaults) agree with."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from kodo.store.statements import sql


def now(conn: sa.Connection) -> datetime:
    """The database's wall clock now (not the transaction's start: ``clock_timestamp()``)."""
    at: datetime = conn.execute(sql("SELECT clock_timestamp()")).scalar_one()
    return at


def ms_since(conn: sa.Connection, at: str) -> int:
    """Milliseconds from ``at`` (an ISO timestamp) to the database's clock now."""
    lag = conn.execute(
        sql("SELECT extract(epoch FROM clock_timestamp() - CAST(:s AS timestamptz)) * 1000"), {"s": at}
    ).scalar_one()
    return int(lag)
