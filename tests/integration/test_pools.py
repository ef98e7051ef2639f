"""A step's transaction never waits for a connection that something waiting on it holds: the API beside its
worker (``kodo up --api-processes 0``) has a pool of its own (with one shared pool a burst of replayed starts,
each waiting on the run's first step, stalled it 30 s and the run failed), and a worker's step transactions
have a pool of their own, apart from the connections its steps take beside them (their write-ahead ledger)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from dbos import DBOSClient

from helpers import wait_until
from kodo.api.deps import ApiContext
from kodo.main import dbos_client, engine_for, launch_worker, running
from kodo.models import Intent
from kodo.settings import Settings
from kodo.store import intents
from kodo.workflows.queue_policy import admit
from kodo.workflows.runs import start_run
from ops_helpers import run_status


def _start(engine: sa.Engine, client: DBOSClient, settings: Settings, name: str) -> str:
    with engine.begin() as conn:
        intent = Intent(id=f"it_{name}", goal=name, inputs={}, constraints={})
        assert intents.create(conn, intent)
        start_run(conn, client, settings, admit(conn, settings, intent.id, {"queuePartitionKey": name}))
    return intent.id


def test_a_step_does_not_wait_for_connections_the_api_holds(settings: Settings, engine: sa.Engine) -> None:
    """Every connection of the API checked out and held: a new run still plans, applies its plan (the ledger's
    write-ahead check takes a connection of its own) and parks at its gate."""
    with running(settings, "monolith") as app:
        context: ApiContext = app.state.kodo
        pool = context.engine.pool
        capacity = pool.size() + pool._max_overflow  # type: ignore[attr-defined]
        held = [context.engine.connect() for _ in range(capacity)]
        try:
            workflow_id = _start(engine, context.client, settings, "held")
            # The step's pool timeout is 30 s: a step waiting for one of the held connections fails after it.
            wait_until(lambda: run_status(engine, workflow_id) == "waiting_input", timeout=20, what="the run parked")
        finally:
            for connection in held:
                connection.close()


def test_steps_running_together_never_take_every_connection_their_ledger_needs(
    settings: Settings, engine: sa.Engine
) -> None:
    """Pools of one connection (and one in overflow): six runs in six partitions take their first steps together,
    each step holding its transaction while its write-ahead check takes a connection beside it; all park."""
    small = settings.model_copy(update={"db_pool_size": 1})
    assert small.database_url is not None
    own = engine_for(small, small.database_url, "kodo-test-small")
    worker = launch_worker(small, small.database_url, own, "monolith")
    client = dbos_client(small, engine)
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            started = list(pool.map(lambda n: _start(engine, client, small, f"pool{n}"), range(6)))

        def parked() -> bool:
            return all(run_status(engine, workflow_id) == "waiting_input" for workflow_id in started)

        wait_until(parked, timeout=25, what="every run parked")  # a step starved of its connection fails at 30 s
    finally:
        client.destroy()
        worker.stop()
        own.dispose()
