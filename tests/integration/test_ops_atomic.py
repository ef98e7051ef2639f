"""Atomic ops: a cancel or resume is the DBOS change, the run row and its audit row together or nothing; a
fork interrupted before its audit is audited by the reconciler; the ops invariant sees planted violations."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import table_counts, wait_status, wait_until
from kodo import faults
from kodo.ops import workflows
from kodo.store import ops_audit, oracles
from ops_helpers import dbos_status, new_run

FAULT = "ops.between_change_and_audit"


@pytest.fixture
def armed() -> Iterator[None]:
    """The fault point between an ops change and its audit raises in this process (the in-process API)."""
    faults.arm(f"{FAULT}:raise")
    try:
        yield
    finally:
        faults.arm(None)


def violations(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(v.kind, v.workflow_id) for v in ops_audit.violations(conn)]


def test_a_cancel_interrupted_before_its_audit_changes_nothing(
    client: TestClient, engine: sa.Engine, armed: None
) -> None:
    """A run cancel that fails after its DBOS change and before its audit row leaves DBOS, app.runs and the
    audit exactly as they were (one transaction); the next cancel does all three, and the invariant agrees."""
    wid = new_run(client)
    waiting = wait_status(client, wid, {"WAITING_INPUT"})
    continuation = waiting["currentWorkflowID"]
    wait_until(lambda: dbos_status(engine, continuation) == "DELAYED", what="the continuation enqueued")
    with engine.connect() as conn:
        before = table_counts(conn)
    with pytest.raises(faults.FaultInjected):
        client.post(f"/api/ops/wf/{wid}/cancel", json={"actor": "qa", "reason": "half"})
    assert dbos_status(engine, continuation) == "DELAYED"
    assert client.get(f"/api/runs/{wid}").json()["status"] == "WAITING_INPUT"
    with engine.connect() as conn:
        assert table_counts(conn) == before
    faults.arm(None)
    done = client.post(f"/api/ops/wf/{wid}/cancel", json={"actor": "qa", "reason": "whole"})
    assert done.status_code == 202, done.text
    assert dbos_status(engine, continuation) == "CANCELLED"
    assert client.get(f"/api/runs/{wid}").json()["status"] == "CANCELLED"
    with engine.connect() as conn:
        (row,) = ops_audit.list_for(conn, [waiting["runId"]])
    assert row.inline["reason"] == "whole" and row.inline["canceledWorkflowIDs"] == [continuation]
    assert violations(engine) == []


def test_a_fork_interrupted_before_its_audit_is_audited_by_the_reconciler(
    client: TestClient, engine: sa.Engine, armed: None
) -> None:
    """The fork happened, the process failed before its audit row: the invariant reports the unaudited fork,
    the reconciler writes exactly the audit row the fork would have, and the invariant is empty again."""
    assert client.post("/slowstep?wf=fork-r&sleep=100").status_code == 202
    wait_until(lambda: dbos_status(engine, "fork-r") == "SUCCESS", timeout=30, what="SUCCESS")
    with pytest.raises(faults.FaultInjected):
        client.post("/api/ops/wf/fork-r/fork", json={"stepN": 3, "actor": "qa", "reason": "fork-crash"})
    faults.arm(None)
    with engine.connect() as conn:
        forked = conn.execute(sa.text("SELECT workflow_uuid FROM dbos.workflow_status WHERE forked_from = 'fork-r'"))
        (fork_id,) = forked.scalars().all()
        assert ops_audit.list_for(conn, ["fork-r"]) == []
    assert violations(engine) == [("fork_not_audited", fork_id)]
    assert workflows.reconcile(engine) == 1
    assert workflows.reconcile(engine) == 0  # once
    with engine.connect() as conn:
        (row,) = ops_audit.list_for(conn, ["fork-r"])
    assert (row.inline["op"], row.inline["forkedWorkflowID"], row.inline["reason"]) == ("fork", fork_id, "fork-crash")
    assert violations(engine) == []


def test_the_ops_invariant_reports_planted_violations(client: TestClient, engine: sa.Engine) -> None:
    """Audit rows naming a cancel, a resume or a fork that DBOS does not show are each reported; a later
    audited action explains an earlier one (cancel then resume is not a violation)."""
    assert client.post("/slowstep?wf=plant-1&sleep=100").status_code == 202
    wait_until(lambda: dbos_status(engine, "plant-1") == "SUCCESS", timeout=30, what="SUCCESS")
    assert violations(engine) == []
    with engine.begin() as conn:
        ops_audit.add(conn, "plant-1", {"op": "cancel", "canceledWorkflowIDs": ["plant-1"]})
    assert violations(engine) == [("cancel_not_applied", "plant-1")]
    with engine.begin() as conn:
        ops_audit.add(conn, "plant-1", {"op": "resume", "resumedWorkflowIDs": ["plant-1"]})
        ops_audit.add(conn, "plant-1", {"op": "fork", "forkedWorkflowID": "never-forked"})
    assert violations(engine) == [("fork_not_applied", "never-forked")]
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE dbos.workflow_status SET status = 'CANCELLED' WHERE workflow_uuid = 'plant-1'"))
    assert violations(engine) == [("fork_not_applied", "never-forked"), ("resume_not_applied", "plant-1")]
    with engine.connect() as conn:  # the oracle registry (kodo ops oracles, kodo chaos) reports them too
        reported = oracles.violations(conn)[oracles.OPS_AUDIT_CHECK]
    assert sorted((row[0], row[2]) for row in reported) == [
        ("fork_not_applied", "never-forked"),
        ("resume_not_applied", "plant-1"),
    ]


def test_concurrent_cancels_of_one_run_make_one_change_and_one_audit_row(client: TestClient, engine: sa.Engine) -> None:
    """Four cancels of the same parked run at once: the run row lock serialises them, one is accepted, the
    others see a cancelled run (409), and there is exactly one audit row."""
    wid = new_run(client)
    waiting = wait_status(client, wid, {"WAITING_INPUT"})
    wait_until(lambda: dbos_status(engine, waiting["currentWorkflowID"]) == "DELAYED", what="the continuation")
    body = {"actor": "qa", "reason": "race"}
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.post(f"/api/ops/wf/{wid}/cancel", json=body).status_code, range(4)))
    assert sorted(answers) == [202, 409, 409, 409]
    with engine.connect() as conn:
        assert len(ops_audit.list_for(conn, [waiting["runId"]])) == 1
    assert violations(engine) == []
