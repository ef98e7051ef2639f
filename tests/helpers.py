"""Small helpers shared by the integration and end-to-end tiers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from kodo.settings import Settings, load_settings
from kodo.store import oracles
from kodo.store.async_connections import AsyncConnections


def oracle_violations(conn: sa.Connection, settle: float = oracles.SETTLE_S) -> dict[str, list[Any]]:
    """Every SQL oracle (``kodo.store.oracles``) that returns rows; an empty dict means all hold. The oracle that
    is true for a moment after each run ends gets ``settle`` seconds, only while nothing else fails."""
    return dict(oracles.violations(conn, settle_s=settle))


class Getter(Protocol):
    def get(self, url: str) -> Any: ...


def wait_until(check: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy; fail with the last value on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or check}: last={last!r}")


def wait_status(http: Getter, wid: str, statuses: set[str], timeout: float = 30.0) -> dict[str, Any]:
    """Poll GET /api/runs/{wid} until its header status is one of ``statuses``."""
    body: dict[str, Any] = {}

    def check() -> bool:
        nonlocal body
        response = http.get(f"/api/runs/{wid}")
        body = response.json() if response.status_code == 200 else {}
        return body.get("status") in statuses

    wait_until(check, timeout=timeout, what=f"{wid} in {statuses}")
    return body


def table_counts(conn: sa.Connection) -> dict[str, int]:
    """Row counts of every app table and of DBOS's workflow table: the zero-write oracle."""
    names = [
        "app.intents",
        "app.opencode_calls",
        "app.spend_reservations",
        "app.tenant_budgets",
        "app.runs",
        "app.run_steps",
        "app.artifacts",
        "app.plan_approvals",
        "app.human_gates",
        "app.human_interactions",
        "app.sbx_runs",
        "app.mock_receipts",
        "app.sbx_executions",
        "app.mock_sandbox_results",
        "app.marks",
        "app.recipe_versions",
        "app.recipe_fixtures",
        "app.recipe_active",
        "app.eval_results",
        "app.sbx_templates",
        "app.webhook_subscriptions",
        "app.webhook_events",
        "app.webhook_deliveries",
        "dbos.workflow_status",
    ]
    counts = conn.execute(sa.text("SELECT " + ", ".join(f"(SELECT count(*) FROM {name})" for name in names))).one()
    return {name: int(count) for name, count in zip(names, counts, strict=True)}


def make_settings(database_url: str, home: Path, **env: str) -> Settings:
    """Settings as a process would build them from this environment."""
    base = {
        "DATABASE_URL": database_url,
        "KODO_HOME": str(home),
        "KODO_QUEUE_POLLING_INTERVAL_SEC": "0.05",
        "KODO_MAX_EXECUTOR_THREADS": "32",
        # No ScheduledTick in tests unless a test asks: a tick would race the zero-write counts.
        "KODO_SCHEDULED_TICK_CRON": "off",
        "KODO_WEBHOOK_RETENTION_CRON": "off",  # likewise for the hourly webhook retention sweep
    }
    return load_settings({**base, **env})


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again on exit: nothing listens there


def refused_error(url: str) -> sa.exc.OperationalError:
    """The error SQLAlchemy raises when connecting to ``url`` fails (a real attempt, nothing mocked)."""
    engine = sa.create_engine(url)
    try:
        engine.connect()
    except sa.exc.OperationalError as error:
        return error
    finally:
        engine.dispose()
    raise AssertionError(f"{url} accepted a connection")


def tcp_refused() -> sa.exc.OperationalError:
    """A TCP connection to a loopback port nothing listens on: refused."""
    return refused_error(f"postgresql+psycopg://kodo@127.0.0.1:{closed_port()}/kodo")


def socket_missing(tmp_path: Path) -> sa.exc.OperationalError:
    """A Unix socket that does not exist (kodo's embedded Postgres while it is down)."""
    return refused_error(f"postgresql+psycopg://kodo@/kodo?host={tmp_path}")


def statements_during(
    engine: sa.Engine, call: Callable[[], Any], loop_reads: AsyncConnections | None = None
) -> list[tuple[str, Any]]:
    """Every statement (with its parameters) that ``call`` makes kodo run on ``engine``, and through
    ``loop_reads`` (the API's event-loop reads) when given."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        if loop_reads is None:
            call()
        else:
            seen.extend(loop_statements_during(loop_reads, call))
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    return seen


def loop_statements_during(loop_reads: AsyncConnections, call: Callable[[], Any]) -> list[tuple[str, Any]]:
    """Every statement (with its parameters) that ``call`` makes kodo run through ``loop_reads``."""
    seen: list[tuple[str, Any]] = []
    fetch_one = loop_reads.fetch_one

    async def recorded(statement: str, params: Any) -> Any:
        seen.append((statement, dict(params)))
        return await fetch_one(statement, params)

    loop_reads.fetch_one = recorded  # type: ignore[method-assign]
    try:
        call()
    finally:
        del loop_reads.fetch_one  # the class's own again
    return seen
