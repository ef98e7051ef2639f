"""A 120-run backlog (queued behind a stopped worker) cancelled by one filtered ``kodo ops cancel``."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from helpers import make_settings, table_counts
from processes import clean_env, run_cli

BACKLOG = 120


def _backlog(engine: sa.Engine, database_url: str, tmp_path: Path, partition: str, count: int) -> list[str]:
    """Runs started the way the API starts them (intent, run row, enqueue in one transaction), no worker."""
    from kodo.identity import new_intent_id
    from kodo.main import dbos_client
    from kodo.models import Intent
    from kodo.store import intents
    from kodo.workflows.queue_policy import admit
    from kodo.workflows.runs import start_run

    settings = make_settings(database_url, tmp_path / "home")
    client = dbos_client(settings, engine)
    wids = []
    try:
        with engine.begin() as conn:
            for n in range(count):
                wid = new_intent_id()
                intents.create(conn, Intent(id=wid, goal=f"backlog {n}", inputs={}, constraints={}))
                start_run(conn, client, settings, admit(conn, settings, wid, {"queuePartitionKey": partition}))
                wids.append(wid)
    finally:
        client.destroy()
    return wids


def test_a_120_run_backlog_is_cancelled_by_one_filtered_batch(
    engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    """Dry run counts 120 (no writes); one `kodo ops cancel` cancels all 120 (audited); other partitions stay."""
    backlog = _backlog(engine, database_url, tmp_path, "backlog", BACKLOG)  # queued behind a stopped worker
    kept = _backlog(engine, database_url, tmp_path, "keep", 3)
    env = clean_env(DATABASE_URL=database_url, KODO_HOME=str(tmp_path / "home"))
    selection = ["--status", "ENQUEUED", "--partition", "backlog", "--older-than", "0s"]
    with engine.connect() as conn:
        before = table_counts(conn)
    dry = run_cli(["ops", "cancel", *selection, "--actor", "sre", "--reason", "drain", "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    assert sorted(dry.stdout.split()) == sorted(backlog)
    assert f"dry-run: would cancel {BACKLOG} workflow(s)" in dry.stderr
    with engine.connect() as conn:
        assert table_counts(conn) == before
    done = run_cli(["ops", "cancel", *selection, "--actor", "sre", "--reason", "drain"], env)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == sorted(backlog)
    assert f"cancel: {BACKLOG} ok, 0 failed" in done.stderr
    with engine.connect() as conn:
        runs = dict(conn.execute(sa.text("SELECT status, count(*) FROM app.runs GROUP BY status")).all())
        workflows = dict(
            conn.execute(sa.text("SELECT status, count(*) FROM dbos.workflow_status GROUP BY status")).all()
        )
        audit = conn.execute(
            sa.text(
                "SELECT count(DISTINCT run_id), count(*) FROM app.artifacts WHERE step_id = 'OPS' "
                "AND inline->>'op' = 'cancel' AND inline->>'actor' = 'sre' AND inline->>'reason' = 'drain'"
            )
        ).one()
        next_actions = conn.execute(
            sa.text("SELECT DISTINCT next_action FROM app.runs WHERE status = 'canceled'")
        ).scalars()
        assert list(next_actions) == ["NONE"]
    assert runs == {"canceled": BACKLOG, "queued": len(kept)}
    assert workflows == {"CANCELLED": BACKLOG, "ENQUEUED": len(kept)}
    assert tuple(audit) == (BACKLOG, BACKLOG)
