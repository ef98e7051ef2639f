"""A bounded pool of asyncio Postgres connections, for the API's hottest read (the run header a polling client
repeats), answered on the event loop: no worker-thread hop, which costs more CPU than the read itself.

Connections are opened on demand, at most ``size`` at once (a request waits for a free one), in autocommit (a
read needs no transaction). One that fails is dropped, never reused; when a reused one fails (the server closed
it: a restart, an outage), every idle one is dropped with it and the read is made once more on a new
connection. A pool follows its event loop: used from another loop, it forgets the connections of the last one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row

from kodo.database import libpq_url
from kodo.store import CONNECT_TIMEOUT_S

AsyncConnection = psycopg.AsyncConnection[DictRow]


class ColumnRow:
    """A psycopg row as the store's row readers take one (``kodo.store.statements.Columns``)."""

    __slots__ = ("_mapping",)

    def __init__(self, columns: Mapping[str, Any]) -> None:
        self._mapping = columns

    def __getattr__(self, name: str) -> Any:
        try:
            return self._mapping[name]
        except KeyError:
            raise AttributeError(name) from None


class AsyncConnections:
    """At most ``size`` open connections to ``url``, lent one request at a time."""

    def __init__(self, url: str, *, size: int, application_name: str) -> None:
        if size < 1:
            raise ValueError("an AsyncConnections pool needs a size of at least 1")
        self.url = libpq_url(url)
        self.size = size
        self.application_name = application_name
        self._idle: list[AsyncConnection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(size)
        self.opened = 0  # connections opened over the pool's life (its tests read it)

    def _follow_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self.close()
            self._loop, self._slots = loop, asyncio.Semaphore(self.size)

    async def _open(self) -> AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(
            self.url,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=self.application_name,
        )
        self.opened += 1
        return conn

    async def fetch_one(self, statement: str, params: Mapping[str, Any]) -> ColumnRow | None:
        """The first row of a read (``statement`` in psycopg's format). When a reused connection fails (the
        server closed it), the idle ones are dropped too and the read is made once more on a new connection."""
        self._follow_loop()
        async with self._slots:
            for attempt in (1, 2):
                reused = bool(self._idle)
                conn = self._idle.pop() if reused else await self._open()
                try:
                    cursor = await conn.execute(statement, params, prepare=True)
                    row = await cursor.fetchone()
                except psycopg.OperationalError:
                    _finish(conn)
                    if not reused or attempt == 2:
                        raise
                    self.close()  # the server closed this one (a restart, an outage): the others are suspect
                    continue
                except BaseException:  # a cancelled or failed read may leave the connection mid-protocol
                    _finish(conn)
                    raise
                if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    self._idle.append(conn)
                else:
                    _finish(conn)
                return None if row is None else ColumnRow(row)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the idle connections (from any thread or loop: libpq's own close, which does not wait)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            _finish(conn)


def _finish(conn: AsyncConnection) -> None:
    if not conn.closed:
        conn.pgconn.finish()
