"""kill -9 of a real ``kodo up`` between an ops cancel's DBOS change and its audit row (fault point armed by
env): the cancel is never half-done, and after a restart it can be made whole."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import sqlalchemy as sa

from helpers import table_counts, wait_until
from kodo.store import ops_audit
from ops_helpers import dbos_status
from processes import KodoProcess


def test_a_cancel_killed_between_its_dbos_change_and_its_audit_is_not_half_done(
    spawn: Callable[..., KodoProcess], engine: sa.Engine
) -> None:
    """The kill rolls the whole transaction back: the continuation stays DELAYED, the run WAITING_INPUT, no
    audit row; restarted, the same cancel commits all three and the ops invariant is empty."""
    up = spawn("up", KODO_FAULT_POINTS="ops.between_change_and_audit:kill")
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    intent = httpx.post(f"{base}/api/intents", json={"goal": "park", "inputs": {}, "constraints": {}}).json()
    wid = intent["intentId"]
    assert httpx.post(f"{base}/api/runs", json={"intentId": wid, "queuePartitionKey": "p"}).status_code == 201

    def parked() -> dict[str, str] | None:
        header = httpx.get(f"{base}/api/runs/{wid}").json()
        waiting = header["status"] == "WAITING_INPUT" and dbos_status(engine, header["currentWorkflowID"]) == "DELAYED"
        return header if waiting else None

    header = wait_until(parked, timeout=60, what="the run parked at its gate")
    continuation = header["currentWorkflowID"]
    with engine.connect() as conn:
        before = table_counts(conn)
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"{base}/api/ops/wf/{wid}/cancel", json={"actor": "qa", "reason": "killed"}, timeout=60)
    assert up.proc is not None and up.proc.wait(timeout=30) == -9, up.tail()
    assert dbos_status(engine, continuation) == "DELAYED"
    with engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM app.runs WHERE workflow_id = :w"), {"w": wid}).scalar()
        assert status == "waiting_input" and table_counts(conn) == before
        assert ops_audit.violations(conn) == []

    up.env.pop("KODO_FAULT_POINTS")
    up.start()
    cancelled = httpx.post(f"{base}/api/ops/wf/{wid}/cancel", json={"actor": "qa", "reason": "whole"}, timeout=60)
    assert cancelled.status_code == 202, cancelled.text
    assert dbos_status(engine, continuation) == "CANCELLED"
    with engine.connect() as conn:
        (row,) = ops_audit.list_for(conn, [header["runId"]])
        assert row.inline["reason"] == "whole"
        assert ops_audit.violations(conn) == []
