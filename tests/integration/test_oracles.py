"""Every SQL oracle can fail: each one, planted with the violation it looks for in a scratch database (this
test's own clone), reports it; the same database without the plant reports nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from kodo.cli import cli
from kodo.settings import Settings
from kodo.store import executions, gates, ops_audit, oracles, receipts, sandbox_runs

RUN, WORKFLOW = "run-1", "wf-1"


def _sql(conn: sa.Connection, text: str, **params: object) -> None:
    conn.execute(sa.text(text), params)


def _execution(conn: sa.Connection, name: str, *, status: str, key: str, attempt: int = 1, **extra: object) -> None:
    executions.start(
        conn,
        execution_id=name,
        run_id=RUN,
        task_key="task-1",
        attempt=attempt,
        idempotency_key=key,
        provider="mock",
        executor_id="exec-1",
        pid=1,
    )
    _sql(
        conn,
        "UPDATE app.sbx_executions SET status = :s, finished_at = clock_timestamp(), reused_from = :f "
        "WHERE execution_id = :e",
        s=status,
        f=extra.get("reused_from"),
        e=name,
    )


def _gate(conn: sa.Connection, key: str, *, resolved: bool = False, result: str | None = None) -> None:
    _sql(
        conn,
        "INSERT INTO app.human_gates (run_id, gate_key, topic, purpose, result, resolved_at) VALUES (:r, :g, "
        "'human:' || :g, 'question', CAST(:res AS jsonb), CASE WHEN :done THEN clock_timestamp() END)",
        r=RUN,
        g=key,
        res=result,
        done=resolved,
    )


def _reply(conn: sa.Connection, key: str) -> None:
    gates.record_interaction(
        conn,
        workflow_id=WORKFLOW,
        run_id=RUN,
        gate_key=key,
        topic=f"human:{key}",
        dedupe_key=f"d-{key}",
        payload={"answer": "yes"},
        origin="manual",
    )


def _receipt_twice(conn: sa.Connection) -> None:
    for attempt in (1, 2):
        receipts.record(conn, run_id=RUN, step_id="ExecuteST", attempt=attempt, request={"a": 1}, response={})


def _sandbox_run_alone(conn: sa.Connection) -> None:
    sandbox_runs.record(
        conn, run_id=RUN, task_key="task-9", attempt=1, provider="mock", request={}, response={"errCode": "NONE"}
    )


def _finished_twice_per_attempt(conn: sa.Connection) -> None:
    _execution(conn, "e1", status="finished", key="key-a")
    _execution(conn, "e2", status="finished", key="key-b")


def _finished_twice_per_key(conn: sa.Connection) -> None:
    _execution(conn, "e1", status="finished", key="key-a", attempt=1)
    _execution(conn, "e2", status="finished", key="key-a", attempt=2)


def _reply_after_resolution(conn: sa.Connection) -> None:
    _gate(conn, "g1", resolved=True)
    _reply(conn, "g1")


def _cancel_audited_not_done(conn: sa.Connection) -> None:
    ops_audit.add(conn, RUN, {"op": "cancel", "targetWorkflowID": WORKFLOW, "actor": "ops", "reason": "planted"})


PLANTS: dict[str, Callable[[sa.Connection], None]] = {
    "duplicate finished executions": _finished_twice_per_attempt,
    "duplicate finished per idempotency key": _finished_twice_per_key,
    "started execution of a dead executor": lambda c: executions.start(
        c,
        execution_id="e1",
        run_id=RUN,
        task_key="task-1",
        attempt=1,
        idempotency_key="key-a",
        provider="local",
        executor_id="vanished",
        pid=4242,
    ),
    "reused execution without a finished producer": lambda c: _execution(
        c, "e1", status="reused", key="key-a", reused_from="never-ran"
    ),
    "settled sandbox run without an execution": _sandbox_run_alone,
    "duplicate receipts": _receipt_twice,
    "terminal run with live workflows": lambda c: _sql(
        c, "UPDATE dbos.workflow_status SET status = 'PENDING' WHERE workflow_uuid = :w", w=WORKFLOW
    ),
    "moving run without a live workflow": lambda c: _sql(c, "UPDATE app.runs SET status = 'running'"),
    "reply without a gate": lambda c: _reply(c, "no-such-gate"),
    "reply after its gate was resolved": _reply_after_resolution,
    "gate decided from a reply not in the ledger": lambda c: _gate(
        c, "g1", resolved=True, result='{"state": "RECEIVED", "payloadHash": "' + "a" * 64 + '"}'
    ),
    "ops audit without its DBOS change": _cancel_audited_not_done,
}


@pytest.fixture
def scratch(engine: sa.Engine) -> sa.Engine:
    """This test's database with one finished run whose DBOS workflow succeeded: every oracle holds."""
    with engine.begin() as conn:
        _sql(conn, "INSERT INTO app.intents (id, goal, payload) VALUES ('intent-1', 'g', '{}')")
        _sql(
            conn,
            "INSERT INTO app.runs (id, intent_id, workflow_id, status) VALUES (:r, 'intent-1', :w, 'succeeded')",
            r=RUN,
            w=WORKFLOW,
        )
        _sql(
            conn,
            "INSERT INTO dbos.workflow_status (workflow_uuid, status, name) VALUES (:w, 'SUCCESS', 'RunIntent')",
            w=WORKFLOW,
        )
    return engine


def test_every_oracle_has_a_planted_violation() -> None:
    """No oracle without a test that makes it fail (add its plant here with the oracle)."""
    assert sorted(PLANTS) == sorted(oracles.ORACLES)


def test_the_unplanted_database_has_no_violation(scratch: sa.Engine) -> None:
    """The baseline every plant starts from satisfies every oracle."""
    with scratch.connect() as conn:
        assert oracles.violations(conn) == {}


@pytest.mark.parametrize("name", sorted(PLANTS))
def test_a_planted_violation_is_reported(scratch: sa.Engine, name: str) -> None:
    """The oracle reports the violation planted for it (and the plant is what trips it)."""
    with scratch.begin() as conn:
        PLANTS[name](conn)
    with scratch.connect() as conn:
        found = oracles.violations(conn)
    assert name in found, found


def test_kodo_ops_oracles_prints_each_oracle_and_fails_on_a_violation(scratch: sa.Engine, settings: Settings) -> None:
    """`kodo ops oracles`: one `ok` line per oracle on a clean database (exit 0); a planted one is VIOLATED (exit 1)."""
    env = {"DATABASE_URL": str(settings.database_url), "KODO_HOME": str(settings.home)}
    clean = CliRunner().invoke(cli, ["ops", "oracles"], env=env)
    assert clean.exit_code == 0 and clean.output.count("ok ") == len(oracles.NAMES)
    with scratch.begin() as conn:
        _receipt_twice(conn)
    broken = CliRunner().invoke(cli, ["ops", "oracles"], env=env)
    assert broken.exit_code == 1 and "VIOLATED duplicate receipts: 1 row(s)" in broken.output


def test_the_settling_oracle_is_given_time_and_a_lasting_violation_is_still_reported(scratch: sa.Engine) -> None:
    """A run ended a moment before DBOS marks its workflow SUCCESS: with ``settle_s`` that moment is waited out
    (no violation), while the same violation that lasts, or any other beside it, is reported."""
    pending = "UPDATE dbos.workflow_status SET status = :s WHERE workflow_uuid = :w"
    with scratch.begin() as conn:
        _sql(conn, pending, s="PENDING", w=WORKFLOW)

    def finish_later() -> None:
        time.sleep(0.5)
        with scratch.begin() as conn:
            _sql(conn, pending, s="SUCCESS", w=WORKFLOW)

    finisher = threading.Thread(target=finish_later)
    finisher.start()
    with scratch.connect() as conn:
        assert oracles.violations(conn, settle_s=10.0) == {}
    finisher.join()
    with scratch.begin() as conn:
        _sql(conn, pending, s="PENDING", w=WORKFLOW)
    with scratch.connect() as conn:
        began = time.monotonic()
        assert set(oracles.violations(conn, settle_s=0.5)) == {oracles.SETTLING}
        assert time.monotonic() - began >= 0.5  # re-checked for the whole settle time before reporting it
    with scratch.begin() as conn:
        _receipt_twice(conn)
    with scratch.connect() as conn:
        began = time.monotonic()
        assert set(oracles.violations(conn, settle_s=30.0)) == {oracles.SETTLING, "duplicate receipts"}
        assert time.monotonic() - began < 30.0  # not alone: nothing to wait for
