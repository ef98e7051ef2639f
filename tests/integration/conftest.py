"""An in-process worker (DBOS launched on the test's own database) and the monolith's API over ASGI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from kodo.main import LOOP_READ_CONNECTIONS, Worker, create_app, dbos_client, engine_for, launch_worker
from kodo.settings import Settings
from kodo.store import create_engine
from kodo.store.async_connections import AsyncConnections


@pytest.fixture
def engine(settings: Settings) -> Iterator[sa.Engine]:
    assert settings.database_url is not None
    engine = create_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def worker(settings: Settings) -> Iterator[Worker]:
    """The worker on an engine of its own, not the API's (``client``'s): as in every process kodo runs."""
    assert settings.database_url is not None
    own = engine_for(settings, settings.database_url, "kodo-test-worker")
    running = launch_worker(settings, settings.database_url, own, "monolith")
    yield running
    running.stop()
    own.dispose()


@pytest.fixture
def client(settings: Settings, engine: sa.Engine, worker: Worker) -> Iterator[TestClient]:
    from kodo.api.deps import ApiContext
    from kodo.api.run_changes import RunChanges

    assert settings.database_url is not None
    dbos = dbos_client(settings, engine)
    changes = RunChanges(settings.database_url).start()
    loop_reads = AsyncConnections(settings.database_url, size=LOOP_READ_CONNECTIONS, application_name="kodo-test-reads")
    context = ApiContext(
        settings=settings, engine=engine, client=dbos, role="monolith", changes=changes, loop_reads=loop_reads
    )
    app = create_app(context)
    try:
        with TestClient(app, base_url="http://127.0.0.1") as http:
            yield http
    finally:
        loop_reads.close()
        changes.stop()
        dbos.destroy()
