"""A kodo app served by a real uvicorn on loopback, in a thread of the test (for clients that speak HTTP)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import sqlalchemy as sa
import uvicorn
from starlette.types import ASGIApp

from kodo.api.deps import ApiContext
from kodo.api.run_changes import RunChanges
from kodo.main import LOOP_READ_CONNECTIONS, create_app, dbos_client
from kodo.settings import Settings
from kodo.store.async_connections import AsyncConnections
from processes import free_port


@contextmanager
def serving(app: ASGIApp, *, lifespan: Literal["on", "off"] = "off") -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1:<free port>; yields its base URL; stops the server on exit."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def live_api(settings: Settings, engine: sa.Engine) -> Iterator[str]:
    """The monolith's API (the caller runs the worker) on a real loopback port; yields its base URL."""
    assert settings.database_url is not None
    dbos = dbos_client(settings, engine)
    changes = RunChanges(settings.database_url).start()
    loop_reads = AsyncConnections(settings.database_url, size=LOOP_READ_CONNECTIONS, application_name="kodo-test-reads")
    context = ApiContext(
        settings=settings, engine=engine, client=dbos, role="monolith", changes=changes, loop_reads=loop_reads
    )
    app = create_app(context)
    try:
        with serving(app) as url:
            yield url
    finally:
        loop_reads.close()
        changes.stop()
        dbos.destroy()
