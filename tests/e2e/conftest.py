"""End-to-end tier: real ``kodo`` processes against the test's own database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from kodo.store import create_engine
from processes import KodoProcess, clean_env, free_port


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def spawn(tmp_path: Path, database_url: str) -> Iterator[Callable[..., KodoProcess]]:
    """Start kodo processes on this test's database; every one is stopped (by PID) at the end."""
    started: list[KodoProcess] = []
    home = tmp_path / "home"

    def _spawn(
        command: str,
        *,
        port: int | None = None,
        admin_port: int | None = None,
        args: tuple[str, ...] = (),
        **env: str,
    ) -> KodoProcess:
        port = port or free_port()
        admin_port = admin_port or free_port()
        full_env = clean_env(
            DATABASE_URL=database_url, KODO_HOME=str(home), PORT=str(port), ADMIN_PORT=str(admin_port), **env
        )
        health_port = admin_port if command == "worker" else port
        process = KodoProcess(
            [command, *args],
            full_env,
            tmp_path / f"{command}-{len(started)}.log",
            f"http://127.0.0.1:{health_port}/healthz",
        )
        process.port = port  # type: ignore[attr-defined]
        process.admin_port = admin_port  # type: ignore[attr-defined]
        started.append(process)
        return process.start()

    yield _spawn
    for process in started:
        process.stop()
