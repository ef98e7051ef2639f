"""kodo's in-transaction cancel and resume (``store.dbos_control``) leave the same ``dbos.workflow_status`` row
as DBOS's own client calls, so a DBOS upgrade that changes what they write fails here first."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from dbos import EnqueueOptions

from kodo.main import Worker, dbos_client
from kodo.settings import Settings
from kodo.store import dbos_control

TIMES = ("workflow_uuid", "creator_xid", "created_at", "updated_at", "completed_at")


def row_of(engine: sa.Engine, workflow_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT * FROM dbos.workflow_status WHERE workflow_uuid = :w"), {"w": workflow_id}
        ).one()
    values = dict(row._mapping)
    shape = {name: values[name] is None for name in TIMES}  # ids and clock readings differ; being set must not
    return {**{k: v for k, v in values.items() if k not in TIMES}, "null": shape}


def test_sql_cancel_and_resume_match_the_dbos_client(settings: Settings, engine: sa.Engine, worker: Worker) -> None:
    """Two identical workflows waiting on a queue nobody serves: one cancelled (then resumed) by DBOSClient,
    the other by our SQL; every column but the id and the clock readings is equal after each."""
    client = dbos_client(settings, engine)
    try:
        for workflow_id in ("by-dbos", "by-sql"):
            options: EnqueueOptions = {
                "workflow_name": "RunIntent",
                "queue_name": "nobodyQ",
                "workflow_id": workflow_id,
            }
            client.enqueue(options, "not-a-run")
        client.cancel_workflow("by-dbos", cancel_children=True)
        with engine.begin() as conn:
            assert dbos_control.cancel(conn, ["by-sql"]) == ["by-sql"]
            assert dbos_control.cancel(conn, ["by-sql"]) == []  # already cancelled: no change reported
        assert row_of(engine, "by-dbos") == row_of(engine, "by-sql")
        assert row_of(engine, "by-sql")["status"] == "CANCELLED"
        client.resume_workflow("by-dbos", queue_name="nobodyQ")
        with engine.begin() as conn:
            assert dbos_control.resume(conn, "by-sql", queue_name="nobodyQ")
        assert row_of(engine, "by-dbos") == row_of(engine, "by-sql")
        assert row_of(engine, "by-sql")["status"] == "ENQUEUED"
    finally:
        client.destroy()
