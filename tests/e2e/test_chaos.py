"""A small bounded ``kodo chaos`` as part of the suite: one crash of each kind (worker, API, monolith, Postgres
restart) against real processes, and the run reports no lost run, no duplicate, no oracle row, no untracked
command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from processes import clean_env


@pytest.mark.timeout(960)  # past the command's own 900 s: four crashes, each restarted and settled
def test_kodo_chaos_four_iterations_is_clean(tmp_path: Path) -> None:
    """`kodo chaos --iterations 4`: exit 0, one row per kind, every run counted, zero duplicates/lost/oracle."""
    out = tmp_path / "rows.json"
    bounds = ["--iterations", "4", "--seed", "7", "--fan-out", "1", "--time-limit", "600"]
    # Not under pytest's basetemp: the embedded Postgres runs as its own user and must reach its data directory.
    home = Path(tempfile.mkdtemp(prefix="kodo-chaos-test-"))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "kodo", "chaos", *bounds, "--home", str(home / "home"), "--out", str(out)],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(out.read_text())
    assert sorted(r["kind"] for r in rows) == ["api", "monolith", "postgres", "worker"]
    assert all(r["iterations"] == 1 and r["runs"] == 3 for r in rows)
    assert sum(r["duplicates"] + r["lostRuns"] + r["oracleRows"] + r["untracked"] for r in rows) == 0
    assert "fault point" in done.stdout and "postgres restart" in done.stdout
