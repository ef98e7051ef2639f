"""What every route reaches: the engine, the DBOS client and the settings, on ``app.state.kodo``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from dbos import DBOSClient
from fastapi import Request

from kodo.api.run_changes import RunChanges
from kodo.ops.context import Ops
from kodo.settings import Role, Settings
from kodo.store.async_connections import AsyncConnections


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiContext:
    settings: Settings
    engine: sa.Engine
    client: DBOSClient
    role: Role
    changes: RunChanges | None = None  # wakes long-polls and event streams; None: they re-read on a timer
    loop_reads: AsyncConnections | None = None  # the run header's read on the event loop; None: on a thread

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A connection for reads only, in autocommit: no BEGIN/ROLLBACK round trips. Under READ COMMITTED each
        statement took its own snapshot anyway, so a read-only transaction would add nothing but latency."""
        with self.engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    def ops(self) -> Ops:
        """The ops plane over this process's engine, DBOS client and settings."""
        return Ops(engine=self.engine, client=self.client, settings=self.settings)


# The headers of a legacy route's answer (it still works; clients should move to its /api successor).
DEPRECATION = {"Deprecation": "true", "Sunset": "Wed, 30 Jun 2027 23:59:59 GMT"}


def context(request: Request) -> ApiContext:
    value: ApiContext = request.app.state.kodo
    return value
