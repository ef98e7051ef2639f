"""SQL and nothing else. Functions take a Connection, return frozen dataclasses, and never commit."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

# A server that does not answer (a failover, a dropped route) fails a connect in 10 s, not the OS's minutes: a
# request or loop meeting an outage answers and retries instead of hanging (docs/ops.md). The engine and the
# API's event-loop reads (kodo.store.async_connections) both connect with it.
CONNECT_TIMEOUT_S = 10


def create_engine(url: str, *, pool_size: int = 10, application_name: str = "kodo") -> sa.Engine:
    """An engine on the kodo database (psycopg 3)."""
    from kodo.database import sqlalchemy_url

    return sa.create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={"application_name": application_name, "connect_timeout": CONNECT_TIMEOUT_S},
    )


def to_json(value: Any) -> str | None:
    """JSON text for a jsonb parameter (None stays SQL NULL)."""
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
