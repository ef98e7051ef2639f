"""The figures of ``kodo bench``'s reports: percentiles of one repetition's samples, and the spread of a
figure over repetitions (each scenario's headline figures)."""

from __future__ import annotations

import statistics
from typing import Any


def percentiles(samples: list[float], digits: int) -> dict[str, float]:
    """Nearest-rank p50 / p95 / p99 and the largest of ``samples``, rounded to ``digits``; none for no samples."""
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], digits)

    return {"p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99), "max": pick(1)} if ordered else {}


def summarize(samples: list[float]) -> dict[str, float]:
    """One repetition's samples: how many, and their percentiles in hundredths."""
    return {"n": len(samples), **percentiles(samples, 2)} if samples else {}


def spread(values: list[float]) -> dict[str, float]:
    """min / median / max of one figure over repetitions (to 4 decimals below 1, so that CPU seconds per
    run keep their milliseconds; to 2 above)."""

    def keep(value: float) -> float:
        return round(value, 4 if abs(value) < 1 else 2)

    return {"min": keep(min(values)), "median": keep(statistics.median(values)), "max": keep(max(values))}


def summary(scenario: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each scenario's headline figures, as min / median / max over the repetitions that report them."""

    def over(*path: str) -> dict[str, float] | None:
        values = []
        for result in results:
            value: Any = result
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, int | float):
                values.append(float(value))
        return spread(values) if values else None

    table: dict[str, list[tuple[str, ...]]] = {
        "burst": [
            ("runsPerSecond",),
            ("acceptSeconds",),
            ("pollsPerSecond",),
            ("requestsPerSecond",),
            ("cpuSecondsPerRun",),
            ("workerCpuSecondsPerRun",),
            ("postgresCpuSecondsPerRun",),
            ("clientCpuSecondsPerRun",),
            ("machineCpuSecondsPerRun",),
            ("dbosOperationsPerRun",),
            ("postgresCommitsPerRun",),
        ],
        "latency": [
            ("startToWaitingMs", "p50"),
            ("startToWaitingMs", "p95"),
            ("approveToSuccessMs", "p50"),
            ("approveToSuccessMs", "p95"),
            ("startToSuccessMs", "p50"),
            ("startToSuccessMs", "p95"),
            ("dbosOperationsPerRun",),
        ],
        "api": [
            ("requestMs", "p50"),
            ("requestMs", "p95"),
            ("routeMs", "start", "p95"),
            ("routeMs", "header", "p95"),
            ("requestsPerSecond",),
        ],
        "hitl": [("replyToResumeMs", "p50"), ("replyToResumeMs", "p95")],
    }
    for figures in table.values():  # the noise of a shared VM, beside every scenario's figures
        figures.append(("cpuStealPercent",))
    table["ceiling"] = table["burst"]
    table["burst-ceiling"] = [*table["burst"], ("ceilingRunsPerSecond",), ("ratioToCeiling",)]
    return {".".join(path): over(*path) for path in table[scenario]}
