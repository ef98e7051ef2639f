"""Dead-executor recovery with real processes: a second worker finishes a killed worker's run."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import sqlalchemy as sa

from helpers import oracle_violations, wait_until
from ops_helpers import run_status
from processes import KodoProcess

FAST = {"KODO_HEARTBEAT_INTERVAL_SEC": "0.5", "KODO_EXECUTOR_DEAD_AFTER_SEC": "3", "CHAOS_SLEEP_EXECUTE": "3000"}


def test_a_second_worker_finishes_a_killed_workers_run(spawn: Callable[..., KodoProcess], engine: sa.Engine) -> None:
    """`kodo up` (exec-a) + `kodo worker` (exec-b); kill -9 the one running the run: the other finishes it."""
    processes = {
        "exec-a": spawn("up", DBOS__VMID="exec-a", **FAST),
        "exec-b": spawn("worker", DBOS__VMID="exec-b", **FAST),
    }
    base = f"http://127.0.0.1:{processes['exec-a'].port}"  # type: ignore[attr-defined]
    intent = httpx.post(f"{base}/api/intents", json={"goal": "recover me", "inputs": {}, "constraints": {}})
    wid = intent.json()["intentId"]
    body = {"intentId": wid, "queuePartitionKey": "rec", "autoApprove": True}
    assert httpx.post(f"{base}/api/runs", json=body).status_code == 201

    def owner() -> str | None:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT status, executor_id FROM dbos.workflow_status WHERE workflow_uuid = :w"), {"w": wid}
            ).first()
        return row.executor_id if row is not None and row.status == "PENDING" else None

    victim = wait_until(owner, timeout=30, what="the run owned by a worker")
    survivor = next(vmid for vmid in processes if vmid != victim)
    processes[victim].kill9()

    wait_until(lambda: run_status(engine, wid) == "succeeded", timeout=60, what="the run finished by the survivor")
    with engine.connect() as conn:
        finisher = conn.execute(
            sa.text("SELECT executor_id FROM dbos.workflow_status WHERE workflow_uuid = :w"), {"w": wid}
        ).scalar()
        recovered = conn.execute(
            sa.text(
                "SELECT inline->>'targetWorkflowID', inline->>'actor', inline->>'deadExecutor' FROM app.artifacts "
                "WHERE step_id = 'OPS' AND inline->>'op' = 'recover'"
            )
        ).all()
        steps = dict(conn.execute(sa.text("SELECT step_id, max(attempt) FROM app.run_steps GROUP BY step_id")).all())
        executors = {
            row.executor_id: (row.stopped_at is None, row.leader_since is not None, row.age)
            for row in conn.execute(
                sa.text(
                    "SELECT executor_id, stopped_at, leader_since, "
                    "extract(epoch FROM clock_timestamp() - heartbeat_at) AS age FROM app.executors"
                )
            )
        }
        assert oracle_violations(conn) == {}
    assert finisher == survivor
    assert (wid, f"recovery-leader:{survivor}", victim) in [tuple(r) for r in recovered]
    assert steps == {"CompileST": 1, "ApplyPatchST": 1, "DecideST": 1, "ExecuteST": 1}
    assert executors[survivor][1] is True and executors[survivor][2] < 3  # the live leader
    assert executors[victim][2] > 3  # silent since the kill
