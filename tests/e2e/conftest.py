"""End-to-end tier: real ``kodo`` processes against the test's own database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from kodo.store import create_engine
from processes import KodoProcess, Spawner


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def spawn(tmp_path: Path, database_url: str) -> Iterator[Callable[..., KodoProcess]]:
    """Start kodo processes on this test's database; every one is stopped (by PID) at the end."""
    spawner = Spawner(tmp_path, tmp_path / "home", database_url)
    yield spawner
    spawner.stop_all()
