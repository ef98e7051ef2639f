"""The arithmetic of ``kodo bench``'s reports: spreads, percentiles and the machine's busy share."""

from __future__ import annotations

from kodo.ops.bench import spread, summarize
from kodo.ops.probe import machine_share


def test_spread_keeps_the_milliseconds_of_cpu_seconds_per_run() -> None:
    """A CPU-seconds-per-run figure (0.0403) is not rounded away to 0.04; runs/s keep two decimals."""
    assert spread([0.0403, 0.0386, 0.0427]) == {"min": 0.0386, "median": 0.0403, "max": 0.0427}
    assert spread([9.391, 9.034, 8.2]) == {"min": 8.2, "median": 9.03, "max": 9.39}


def test_summarize_picks_nearest_rank_percentiles() -> None:
    """p50/p95/p99 are nearest-rank picks of the sorted samples; max is the largest."""
    figures = summarize([float(n) for n in range(1, 101)])
    assert figures == {"n": 100, "p50": 51.0, "p95": 96.0, "p99": 100.0, "max": 100.0}
    assert summarize([]) == {}


def test_machine_share_splits_busy_and_steal() -> None:
    """Busy and steal are shares of all the machine's jiffies between two reads; no reads, no figures."""
    assert machine_share((100, 10, 1000), (400, 60, 2000)) == {"cpuBusyPercent": 30.0, "cpuStealPercent": 5.0}
    assert machine_share(None, (1, 1, 1)) == {}
