"""``kodo bench history seed`` killed part-way (kill -9 inside a batch of clones) resumes to exactly the sizes
asked for: the batch that was being written is gone whole, nothing is written twice."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from kodo.store import history, oracles
from processes import KodoProcess, clean_env

SEED = "from kodo.cli.bench_history import history; history()"


def _seed(up: KodoProcess, database_url: str, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    command = [sys.executable, "-c", SEED, "seed", "--base", base, *args]
    return subprocess.run(
        command,
        env=clean_env(DATABASE_URL=database_url, KODO_HOME=str(home), **env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_seed_killed_inside_a_batch_resumes_exactly(
    spawn: Callable[..., KodoProcess], engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    """kill -9 while the second batch of clones is written: the first batch stays, the second is rolled back
    whole; the same seed again brings the database to exactly 500 finished and 8 parked runs, oracles clean."""
    up = spawn("up")
    home = tmp_path / "seed-home"
    args = ("--finished", "500", "--parked", "8", "--batch", "100")
    killed = _seed(up, database_url, home, *args, KODO_FAULT_POINTS="history.clone_batch:kill:2")
    assert killed.returncode == -9, killed.stderr[-2000:]
    with engine.connect() as conn:
        assert history.counts(conn).clones == 100 and history.counts(conn).templates == 2
    resumed = _seed(up, database_url, home, *args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads(resumed.stdout)
    assert report["before"]["clones"] == 100 and report["clonedRuns"] == 398
    assert report["after"] == {"finished": 500, "parked": 8, "clones": 498}
    with engine.connect() as conn:
        duplicates = conn.execute(
            sa.text(
                "SELECT count(*) - count(DISTINCT workflow_id) FROM app.runs WHERE queue_partition_key LIKE 'hist-%'"
            )
        ).scalar_one()
        assert duplicates == 0
        assert oracles.violations(conn, dead_after_s=3600) == {}
