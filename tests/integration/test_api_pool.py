"""One process serving the API beside its worker (``kodo up --api-processes 0``): the API's connections are not
the ones a run's steps need, so requests holding every API connection do not stall a step's write-ahead commit
(with one shared pool a burst of replayed starts, each waiting on the run's first step, stalled it 30 s and the
run failed)."""

from __future__ import annotations

import sqlalchemy as sa

from helpers import wait_until
from kodo.api.deps import ApiContext
from kodo.main import running
from kodo.models import Intent
from kodo.settings import Settings
from kodo.store import intents
from kodo.workflows.queue_policy import admit
from kodo.workflows.runs import start_run


def _status(engine: sa.Engine, workflow_id: str) -> str | None:
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT status FROM app.runs WHERE workflow_id = :w"), {"w": workflow_id})
        return found.scalar_one_or_none()


def test_a_step_does_not_wait_for_connections_the_api_holds(settings: Settings, engine: sa.Engine) -> None:
    """Every connection of the API checked out and held: a new run still plans, applies its plan (the ledger's
    write-ahead check takes a connection of its own) and parks at its gate."""
    with running(settings, "monolith") as app:
        context: ApiContext = app.state.kodo
        pool = context.engine.pool
        capacity = pool.size() + pool._max_overflow  # type: ignore[attr-defined]
        held = [context.engine.connect() for _ in range(capacity)]
        try:
            with engine.begin() as conn:
                intent = Intent(id="it_pool_held", goal="pool held", inputs={}, constraints={})
                assert intents.create(conn, intent)
                start = admit(conn, settings, intent.id, {"queuePartitionKey": "pool"})
                start_run(conn, context.client, settings, start)
            # The step's pool timeout is 30 s: a step waiting for one of the held connections fails after it.
            wait_until(lambda: _status(engine, intent.id) == "waiting_input", timeout=20, what="the run parked")
        finally:
            for connection in held:
                connection.close()
