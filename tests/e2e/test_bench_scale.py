"""``kodo bench scale``: a fresh ``kodo up --workers K`` per point, the curve reported, nothing left behind."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from processes import clean_env, run_cli


def test_bench_scale_reports_a_point_per_worker_count_and_cleans_up(tmp_path: Path) -> None:
    """Two points (1 and 2 workers), each a real burst on its own kodo up: runs/s, speed-up, CPU, the bound;
    every server and embedded Postgres it started is stopped and its data directory removed."""
    # Its data directories under the system's temporary directory: the embedded Postgres runs as its own user
    # and cannot reach pytest's basetemp.
    temporary = Path(tempfile.gettempdir())
    before = {path.name for path in temporary.glob("kodo-bench-scale-*")}
    env = clean_env(KODO_HOME=str(tmp_path / "home"))
    result = run_cli(
        ["bench", "scale", "--workers", "1,2", "--n", "4", "--partitions", "2", "--reps", "1", "--timeout", "300"],
        env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [point["workers"] for point in report["curve"]] == [1, 2]
    for point in report["curve"]:
        assert point["runsPerSecond"]["median"] > 0 and point["cpuSecondsPerRun"] > 0 and point["speedup"] > 0
    assert report["curve"][0]["speedup"] == 1.0 and report["boundBy"]
    for reps in report["repetitions"].values():
        assert reps[0]["failed"] == 0 and reps[0]["runs"] == 4
        assert reps[0]["oracles"] == {}  # checked on each server before it stops
    assert {path.name for path in temporary.glob("kodo-bench-scale-*")} <= before  # its own are removed
