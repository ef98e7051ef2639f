"""SQL oracles: invariants of kodo's tables that a real bug would break, each a query returning the rows that
break it. An empty result from every oracle is the SQL proof that each effect happened as often as promised.

Only invariants that no key or constraint already guarantees belong here (a PRIMARY KEY, UNIQUE or CHECK
makes its oracle unable to fail, and an oracle that cannot fail proves nothing). Each one has a test that
plants a violation in a scratch database and sees it reported (tests/integration/test_oracles.py).

Adding an oracle is one entry in :data:`ORACLES`. A query may use ``:dead_after_s`` (how long a silent
executor counts as alive).

A run's last step marks it ended a moment before DBOS marks its workflow SUCCESS (two commits), so a check
taken as runs end can look inside that moment: with ``settle_s``, :func:`violations` re-reads "terminal run
with live workflows" while it is the only oracle reporting, for up to that long (a violation that stays is
reported).

Two invariants are not one query each, and :func:`violations` adds them: "ops audit and DBOS disagree"
(:func:`kodo.store.ops_audit.violations`, which also sees a fork DBOS shows without its audit row) and, when
the caller names the workspaces folder, "workspace file matches neither image" (every ledgered file whose bytes
are neither the preimage nor the postimage its run's patch ledger allows:
:func:`kodo.store.patches.workspace_violations`). Their planted-violation tests are in
tests/integration/test_ops_atomic.py and tests/integration/test_patch_ledger.py.
"""

from __future__ import annotations

import time
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kodo.store import ops_audit, patches
from kodo.store.statements import sql

ACTIVE_DBOS = "('PENDING', 'ENQUEUED', 'DELAYED')"
TERMINAL_RUNS = "('succeeded', 'failed', 'canceled', 'retries_exceeded')"
MOVING_RUNS = "('queued', 'running', 'repairing')"


@dataclass(frozen=True, slots=True)
class Oracle:
    invariant: str  # what must hold, in one sentence
    query: str  # the rows that break it


# A run's own DBOS workflows: its first workflow, its current phase, and their children.
_RUN_WORKFLOWS = (
    "SELECT w.workflow_uuid, w.status FROM dbos.workflow_status w WHERE w.workflow_uuid IN "
    "(r.workflow_id, r.current_workflow_id) OR w.parent_workflow_id IN (r.workflow_id, r.current_workflow_id)"
)

ORACLES: dict[str, Oracle] = {
    # --- sandbox executions (app.sbx_executions) ----------------------------------------------------
    "duplicate finished executions": Oracle(
        "A task attempt's command runs to its end at most once (a re-execution reuses the kept result).",
        "SELECT run_id, task_key, attempt, count(*) FROM app.sbx_executions WHERE status = 'finished' "
        "GROUP BY 1, 2, 3 HAVING count(*) > 1",
    ),
    "duplicate finished per idempotency key": Oracle(
        "At most one execution finishes under one idempotency key.",
        "SELECT idempotency_key, count(*) FROM app.sbx_executions WHERE status = 'finished' "
        "GROUP BY 1 HAVING count(*) > 1",
    ),
    "started execution of a dead executor": Oracle(
        "An execution still `started` belongs to a live process (same executor and pid, heartbeating); "
        "whoever finds one cut off marks it `interrupted`.",
        "SELECT e.execution_id, e.executor_id, e.pid FROM app.sbx_executions e WHERE e.status = 'started' "
        "AND NOT EXISTS (SELECT 1 FROM app.executors x WHERE x.executor_id = e.executor_id AND x.pid = e.pid "
        "AND x.stopped_at IS NULL AND x.heartbeat_at > clock_timestamp() - make_interval(secs => :dead_after_s))",
    ),
    "reused execution without a finished producer": Oracle(
        "A `reused` execution names the execution that ran the command to its end.",
        "SELECT e.execution_id, e.reused_from FROM app.sbx_executions e WHERE e.status = 'reused' AND NOT EXISTS "
        "(SELECT 1 FROM app.sbx_executions p WHERE p.execution_id = e.reused_from AND p.status = 'finished' "
        "AND p.idempotency_key = e.idempotency_key)",
    ),
    "settled sandbox run without an execution": Oracle(
        "Every recorded sandbox attempt (app.sbx_runs) has its finished or reused execution.",
        "SELECT s.run_id, s.task_key, s.attempt FROM app.sbx_runs s WHERE NOT EXISTS (SELECT 1 FROM "
        "app.sbx_executions e WHERE e.run_id = s.run_id AND e.task_key = s.task_key AND e.attempt = s.attempt "
        "AND e.status IN ('finished', 'reused'))",
    ),
    "duplicate receipts": Oracle(
        "ExecuteST's aggregate receipt is written once (its transaction commits with its checkpoint).",
        "SELECT receipt_key, seen_count FROM app.mock_receipts WHERE seen_count > 1",
    ),
    # --- runs against DBOS ---------------------------------------------------------------------------
    "terminal run with live workflows": Oracle(
        "A run that ended has no workflow of its own still pending, enqueued or delayed.",
        f"SELECT r.id, r.status, w.workflow_uuid, w.status FROM app.runs r CROSS JOIN LATERAL ({_RUN_WORKFLOWS}) w "
        f"WHERE r.status IN {TERMINAL_RUNS} AND w.status IN {ACTIVE_DBOS}",
    ),
    "moving run without a live workflow": Oracle(
        "A queued, running or repairing run has a workflow of its own that is pending, enqueued or delayed.",
        f"SELECT r.id, r.status FROM app.runs r WHERE r.status IN {MOVING_RUNS} AND NOT EXISTS "
        f"(SELECT 1 FROM ({_RUN_WORKFLOWS}) w WHERE w.status IN {ACTIVE_DBOS})",
    ),
    # --- gates and their reply ledger ----------------------------------------------------------------
    "reply without a gate": Oracle(
        "Every ledgered reply answers a gate that exists.",
        "SELECT i.id, i.run_id, i.gate_key FROM app.human_interactions i WHERE NOT EXISTS "
        "(SELECT 1 FROM app.human_gates g WHERE g.run_id = i.run_id AND g.gate_key = i.gate_key)",
    ),
    "reply after its gate was resolved": Oracle(
        "No reply is ledgered on a gate once it is resolved (a gate is decided once).",
        "SELECT i.id, i.run_id, i.gate_key FROM app.human_interactions i JOIN app.human_gates g "
        "ON g.run_id = i.run_id AND g.gate_key = i.gate_key WHERE g.resolved_at IS NOT NULL "
        "AND i.created_at > g.resolved_at AND i.topic = 'human:' || i.gate_key",
    ),
    "gate decided from a reply not in the ledger": Oracle(
        "A gate resolved from a reply took the first reply ledgered on its human topic.",
        "SELECT g.run_id, g.gate_key FROM app.human_gates g JOIN app.runs r ON r.id = g.run_id "
        "WHERE g.result->>'state' = 'RECEIVED' AND g.result ? 'payloadHash' AND g.result->>'payloadHash' "
        "IS DISTINCT FROM (SELECT i.payload_hash FROM app.human_interactions i WHERE i.workflow_id = "
        "r.workflow_id AND i.gate_key = g.gate_key AND i.topic = 'human:' || g.gate_key "
        "ORDER BY i.created_at, i.id LIMIT 1)",
    ),
    # --- operator actions ----------------------------------------------------------------------------
    "ops audit without its DBOS change": Oracle(
        "An audited cancel left its workflow CANCELLED, a resume left it not CANCELLED (until a later audited "
        "action), and an audited fork names a workflow that exists.",
        "SELECT a.run_id, a.task_key, a.inline->>'op', a.inline->>'targetWorkflowID' FROM app.artifacts a "
        "LEFT JOIN dbos.workflow_status w ON w.workflow_uuid = a.inline->>'targetWorkflowID' "
        "WHERE a.step_id = 'OPS' AND ("
        "(a.inline->>'op' = 'fork' AND NOT EXISTS (SELECT 1 FROM dbos.workflow_status f "
        "WHERE f.workflow_uuid = a.inline->>'forkedWorkflowID')) OR "
        "(a.inline->>'op' IN ('cancel', 'resume') AND NOT EXISTS (SELECT 1 FROM app.artifacts later "
        "WHERE later.step_id = 'OPS' AND later.inline->>'targetWorkflowID' = a.inline->>'targetWorkflowID' "
        "AND later.created_at > a.created_at) AND ("
        "(a.inline->>'op' = 'cancel' AND coalesce(a.inline->>'phaseStatus', 'PENDING') IN "
        f"{ACTIVE_DBOS} AND w.status IS DISTINCT FROM 'CANCELLED') OR "
        "(a.inline->>'op' = 'resume' AND w.status = 'CANCELLED'))))",
    ),
}


OPS_AUDIT_CHECK = "ops audit and DBOS disagree"
WORKSPACE_CHECK = "workspace file matches neither image"
NAMES = (*ORACLES, OPS_AUDIT_CHECK, WORKSPACE_CHECK)  # everything violations() can report


SETTLING = "terminal run with live workflows"  # true for a moment after each run ends (module docstring)
SETTLE_S = 5.0  # how long the commands that check as runs end (ops oracles, bench, chaos) give it


def violations(
    conn: sa.Connection, *, dead_after_s: float = 30.0, workspaces_dir: Path | None = None, settle_s: float = 0.0
) -> dict[str, list[tuple[Any, ...]]]:
    """Every oracle that returns rows, with its rows (an empty dict means every invariant holds); with
    ``workspaces_dir``, the workspaces on disk are held against their patch ledger too; with ``settle_s``, the
    settling oracle, when it alone reports, is re-read for up to that long (the others held at the first check).
    ``conn`` must see each statement's own snapshot (READ COMMITTED, kodo's default) for a re-read to see
    anything new."""
    deadline = time.monotonic() + settle_s
    found = _violations(conn, dead_after_s, workspaces_dir)
    while set(found) == {SETTLING} and time.monotonic() < deadline:
        time.sleep(0.05)
        rows = _rows(conn, ORACLES[SETTLING], dead_after_s)
        found = {SETTLING: rows} if rows else {}
    return found


def _rows(conn: sa.Connection, oracle: Oracle, dead_after_s: float) -> list[tuple[Any, ...]]:
    params = {"dead_after_s": dead_after_s} if ":dead_after_s" in oracle.query else {}
    return [tuple(row) for row in conn.execute(sql(oracle.query), params).all()]


def _violations(
    conn: sa.Connection, dead_after_s: float, workspaces_dir: Path | None
) -> dict[str, list[tuple[Any, ...]]]:
    found: dict[str, list[tuple[Any, ...]]] = {}
    disagreements = [astuple(row) for row in ops_audit.violations(conn)]
    if disagreements:
        found[OPS_AUDIT_CHECK] = disagreements
    if workspaces_dir is not None:
        mismatched = [astuple(row) for row in patches.workspace_violations(conn, workspaces_dir)]
        if mismatched:
            found[WORKSPACE_CHECK] = mismatched
    for name, oracle in ORACLES.items():
        rows = _rows(conn, oracle, dead_after_s)
        if rows:
            found[name] = rows
    return found
