"""The services steps reach: installed once by ``kodo.main`` (or a test fixture) before DBOS launches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from dbos import DBOSClient, SQLAlchemyDatasource

from kodo import outages
from kodo.adapters.agent import CodingAgent
from kodo.adapters.sandbox import Sandbox
from kodo.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    settings: Settings
    engine: sa.Engine
    datasource: SQLAlchemyDatasource
    client: DBOSClient  # enqueues inside a datasource transaction (a parked run's continuation)
    agent: CodingAgent
    sandbox: Sandbox
    # The wall clock of tenant spend windows (UTC day and month); tests inject another to roll a window over.
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


class _Holder:
    current: Services | None = None


def install(services: Services | None) -> None:
    """Make ``services`` the ones every step uses (``None`` uninstalls)."""
    _Holder.current = services


def services() -> Services:
    if _Holder.current is None:
        raise RuntimeError("kodo workflow services are not installed (kodo.main installs them at start-up)")
    return _Holder.current


def transact(name: str, body: Callable[..., T], *args: Any) -> T:
    """Run ``body(conn, *args)`` as a datasource transaction: its rows commit with its DBOS checkpoint."""
    datasource = services().datasource

    def _run(*inner: Any) -> T:
        return body(datasource.sql_session().connection(), *inner)

    _run.__qualname__ = name
    return datasource.run_tx_step({"name": name, "isolation_level": "READ COMMITTED"}, _run, *args)


def own_transaction(name: str, body: Callable[..., T], *args: Any) -> T:
    """Run ``body(conn, *args)`` in a transaction of its own (a step's writes outside ``transact``), waiting out
    a database outage (up to ``KODO_DB_OUTAGE_MAX_SEC``) instead of failing the step; ``body`` must be
    idempotent (it may run again after a commit that was lost with the connection)."""
    svc = services()

    def attempt() -> T:
        with svc.engine.begin() as conn:
            return body(conn, *args)

    return outages.wait_out(attempt, max_sec=svc.settings.db_outage_max_sec, what=name)
