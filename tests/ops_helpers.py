"""Helpers shared by the ops-plane tests (integration and end-to-end)."""

from __future__ import annotations

from typing import Any, Protocol

import sqlalchemy as sa


class Http(Protocol):
    def get(self, url: str) -> Any: ...

    def post(self, url: str, json: Any = None) -> Any: ...


def dbos_status(engine: sa.Engine, wid: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = :w"), {"w": wid}
        ).scalar()


def run_status(engine: sa.Engine, wid: str) -> str | None:
    """The run row's status (``app.runs``), by workflow id."""
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT status FROM app.runs WHERE workflow_id = :w"), {"w": wid}).scalar()


def marks(client: Http, wf: str) -> dict[str, int]:
    return dict(client.get(f"/slowmarks?wf={wf}").json())


def ops_audit(engine: sa.Engine, anchor: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT kind, inline FROM app.artifacts WHERE step_id = 'OPS' AND run_id = :a ORDER BY created_at"),
            {"a": anchor},
        ).all()
    assert all(kind == "json_diagnostic" for kind, _inline in rows)
    return [inline for _kind, inline in rows]


def new_run(client: Http, goal: str = "ops run", *, partition: str = "ops", **fields: Any) -> str:
    intent = client.post(
        "/api/intents", json={"goal": goal, "inputs": {}, "constraints": fields.pop("constraints", {})}
    )
    wid = str(intent.json()["intentId"])
    started = client.post("/api/runs", json={"intentId": wid, "queuePartitionKey": partition, **fields})
    assert started.status_code == 201, started.text
    return wid
