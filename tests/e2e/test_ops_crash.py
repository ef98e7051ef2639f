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
    up.wait_killed(30)
    assert dbos_status(engine, continuation) == "DELAYED"
    with engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM app.runs WHERE workflow_id = :w"), {"w": wid}).scalar()
        assert status == "waiting_input" and table_counts(conn) == before
        assert ops_audit.violations(conn) == []

    up.restart_unarmed()
    cancelled = httpx.post(f"{base}/api/ops/wf/{wid}/cancel", json={"actor": "qa", "reason": "whole"}, timeout=60)
    assert cancelled.status_code == 202, cancelled.text
    assert dbos_status(engine, continuation) == "CANCELLED"
    with engine.connect() as conn:
        (row,) = ops_audit.list_for(conn, [header["runId"]])
        assert row.inline["reason"] == "whole"
        assert ops_audit.violations(conn) == []


def test_a_fork_killed_before_its_audit_is_audited_by_the_restarted_recovery_leader(
    spawn: Callable[..., KodoProcess], engine: sa.Engine
) -> None:
    """kill -9 after DBOS forked and before the audit row: the fork exists unaudited (the invariant says so);
    the restarted process's recovery leader writes exactly one audit row for it, with no further ops call."""
    # No recovery round in the armed process (its first would come after an hour): a round between DBOS's fork and
    # the fault point would audit the fork itself, as it may, and leave nothing for the restart to show.
    up = spawn("up", KODO_FAULT_POINTS="ops.between_change_and_audit:kill", KODO_HEARTBEAT_INTERVAL_SEC="3600")
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    assert httpx.post(f"{base}/slowstep?wf=fork-k&sleep=100").status_code == 202
    wait_until(lambda: dbos_status(engine, "fork-k") == "SUCCESS", timeout=30, what="fork-k SUCCESS")
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"{base}/api/ops/wf/fork-k/fork", json={"stepN": 3, "actor": "qa", "reason": "killed"}, timeout=60)
    up.wait_killed(30)
    with engine.connect() as conn:
        (fork_id,) = conn.execute(
            sa.text("SELECT workflow_uuid FROM dbos.workflow_status WHERE forked_from = 'fork-k'")
        ).scalars()
        assert [(v.kind, v.workflow_id) for v in ops_audit.violations(conn)] == [("fork_not_audited", fork_id)]

    up.env["KODO_HEARTBEAT_INTERVAL_SEC"] = "0.5"
    up.restart_unarmed()

    def audited() -> list[ops_audit.AuditRow]:
        with engine.connect() as conn:
            return ops_audit.list_for(conn, ["fork-k"])

    (row,) = wait_until(audited, timeout=60, what="the reconciler's audit row")
    assert (row.inline["op"], row.inline["forkedWorkflowID"], row.inline["reason"]) == ("fork", fork_id, "killed")
    with engine.connect() as conn:
        assert ops_audit.violations(conn) == []
