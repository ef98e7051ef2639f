"""``kodo bench history``: a long history in the database, and how fast the hot reads answer over it.

``seed`` brings the database to ``finished`` finished runs and ``parked`` runs parked at their plan gate,
counting what is there and adding the rest (so a stopped seed resumes), within bounds:

* parked runs are real: started over the API of a running kodo (``POST /api/intents`` + ``POST /api/runs``,
  plan gates open for 30 days), run by its worker up to the gate, where each waits as a DBOS workflow
  (its ``ResumeRun`` continuation DELAYED until the deadline);
* finished runs are clones of two template runs kodo really ran over the same API (one auto-approved, one
  parked and approved), written in batches by ``kodo.store.history`` with fresh identifiers and spread over
  the past: the real workflow finishes ~10 runs/s on this machine (100,000 would take hours), a batch of
  clones ~1,000 runs/s.

``measure`` times each hot read K times (p50/p95): the run header, the ops run list with a filter, the
HITL inbox, queue depth, a run's diagnosis (over HTTP, one client), and a filtered batch dry-run (the
selection ``kodo ops cancel --dry-run`` makes, straight on the database); then a burst of auto-approved
runs (runs/s), and the machine's busy and steal shares over the measurement.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypedDict
from urllib.parse import urlparse

import httpx
import sqlalchemy as sa

from kodo import faults
from kodo.errors import InvalidInput
from kodo.store import dbos_workflows, history
from kodo.store.dbos_workflows import Filter

MAX_FINISHED = 1_000_000
MAX_PARKED = 100_000
PARK_TTL_S = 30 * 86400  # parked runs stay parked for the measurement (their gate's deadline)
READS = ("header", "list", "inbox", "queueDepth", "diagnosis", "batchDryRun")


class SeedReport(TypedDict):
    before: dict[str, int]
    after: dict[str, int]
    clonedRuns: int
    clonedRows: int
    startedParked: int
    seconds: float


def require_loopback(base_url: str) -> None:
    host = urlparse(base_url).hostname or ""
    if host not in {"localhost", "127.0.0.1", "::1"}:
        raise InvalidInput(f"kodo bench history only talks to this machine (loopback), not {host!r}")


@contextmanager
def http_client(base_url: str, connections: int) -> Iterator[httpx.Client]:
    require_loopback(base_url)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=2.0)
    with httpx.Client(base_url=base_url, timeout=60, limits=limits) as client:
        yield client


def _counts(engine: sa.Engine) -> history.HistoryCounts:
    with engine.connect() as conn:
        return history.counts(conn)


def _as_dict(counts: history.HistoryCounts) -> dict[str, int]:
    return {"finished": counts.finished, "parked": counts.parked, "clones": counts.clones}


def start_run(http: httpx.Client, goal: str, partition: str, *, auto: bool) -> str:
    """Start one run over the API; returns its workflow id."""
    constraints = {"planApprovalTimeoutS": PARK_TTL_S}
    intent = http.post("/api/intents", json={"goal": goal, "inputs": {}, "constraints": constraints})
    if intent.status_code != 201:
        raise RuntimeError(f"POST /api/intents answered {intent.status_code}: {intent.text[:200]}")
    wid = str(intent.json()["intentId"])
    body = {"intentId": wid, "queuePartitionKey": partition, "autoApprove": auto}
    started = http.post("/api/runs", json=body)
    if started.status_code not in {200, 201}:
        raise RuntimeError(f"POST /api/runs answered {started.status_code}: {started.text[:200]}")
    return wid


def _until(http: httpx.Client, wid: str, until: str, want: set[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        header = http.get(f"/api/runs/{wid}", params={"until": until, "timeoutS": "20"}).raise_for_status().json()
        if header["status"] in want:
            return
    raise TimeoutError(f"run {wid} did not reach {sorted(want)} in time")


def _templates(http: httpx.Client, engine: sa.Engine, deadline: float) -> None:
    """Two finished template runs of kodo's own: one auto-approved, one parked and then approved."""
    with engine.connect() as conn:
        have = len(history.template_runs(conn))
    if have >= 2:
        return
    auto = start_run(http, "history template (auto-approved)", history.TEMPLATE_PARTITION, auto=True)
    _until(http, auto, "end", {"SUCCESS"}, deadline)
    parked = start_run(http, "history template (approved)", history.TEMPLATE_PARTITION, auto=False)
    _until(http, parked, "input", {"WAITING_INPUT"}, deadline)
    http.post(f"/api/runs/{parked}/approve-plan", json={"approvedBy": "bench-history"}).raise_for_status()
    _until(http, parked, "end", {"SUCCESS"}, deadline)


def seed(
    engine: sa.Engine,
    http: httpx.Client,
    *,
    finished: int,
    parked: int,
    batch: int = 1000,
    spacing_s: float = 25.0,
    timeout_s: float = 3600.0,
    starters: int = 4,
    progress: Callable[[str], None] = lambda _: None,
) -> SeedReport:
    """Bring the database to ``finished`` finished and ``parked`` parked runs (see the module docstring),
    starting runs through ``http`` (``http_client``: a loopback kodo)."""
    if not 0 <= finished <= MAX_FINISHED or not 0 <= parked <= MAX_PARKED:
        raise InvalidInput(f"--finished must be 0..{MAX_FINISHED} and --parked 0..{MAX_PARKED}")
    if not 1 <= batch <= 10_000 or not 1 <= starters <= 32:
        raise InvalidInput("--batch must be 1..10000 (and starters 1..32)")
    began = time.monotonic()
    deadline = began + timeout_s
    before = _counts(engine)
    report = SeedReport(before=_as_dict(before), after={}, clonedRuns=0, clonedRows=0, startedParked=0, seconds=0.0)
    _templates(http, engine, deadline)
    missing = finished - _counts(engine).finished
    if missing > 0:
        report["clonedRuns"], report["clonedRows"] = _clone(engine, missing, batch, spacing_s, deadline, progress)
    report["startedParked"] = _park(http, engine, parked, deadline, starters, progress)
    report["after"] = _as_dict(_counts(engine))
    report["seconds"] = round(time.monotonic() - began, 1)
    return report


def _clone(
    engine: sa.Engine, missing: int, batch: int, spacing_s: float, deadline: float, progress: Callable[[str], None]
) -> tuple[int, int]:
    runs = rows = 0
    with engine.connect() as conn:
        with conn.begin():
            staged = history.stage(conn, history.template_runs(conn))
            first = history.counts(conn).clones
        while runs < missing:
            if time.monotonic() > deadline:
                raise TimeoutError(f"seed time limit reached after {runs} cloned runs (run it again to go on)")
            size = min(batch, missing - runs)
            with conn.begin():
                rows += history.clone(conn, staged, first + runs, size, spacing_s)
                faults.hit("history.clone_batch")
            runs += size
            progress(f"finished: +{runs}/{missing} cloned")
    return runs, rows


def _park(
    http: httpx.Client, engine: sa.Engine, parked: int, deadline: float, starters: int, progress: Callable[[str], None]
) -> int:
    """Start the missing parked runs over the API, then wait until the worker has parked them all."""
    missing = parked - _counts(engine).parked
    started = 0
    if missing > 0:
        offset = int(time.time())
        with ThreadPoolExecutor(starters) as pool:
            for chunk in range(0, missing, 200):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"seed time limit reached after starting {started} parked runs")
                size = min(200, missing - chunk)
                list(
                    pool.map(
                        lambda n: start_run(
                            http,
                            f"history parked {offset}-{n}",
                            f"{history.PARKED_PARTITION_PREFIX}{n % 8}",
                            auto=False,
                        ),
                        range(chunk, chunk + size),
                    )
                )
                started += size
                progress(f"parked: {started}/{missing} started, {_counts(engine).parked} parked")
    while _counts(engine).parked < parked:
        if time.monotonic() > deadline:
            raise TimeoutError("seed time limit reached waiting for runs to park")
        time.sleep(1.0)
    return started


# --- measure -------------------------------------------------------------------------------------------


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"n": len(ordered), "p50": pick(0.5), "p95": pick(0.95), "max": round(ordered[-1], 2)}


def cpu_clock() -> tuple[int, int, int]:
    """(total, idle + iowait, steal) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    return sum(fields[:8]), fields[3] + fields[4], fields[7]


def _shares(before: tuple[int, int, int], after: tuple[int, int, int]) -> dict[str, float]:
    total = max(1, after[0] - before[0])
    return {
        "cpuBusyPercent": round(100 * (total - (after[1] - before[1])) / total, 1),
        "cpuStealPercent": round(100 * (after[2] - before[2]) / total, 1),
    }


Read = Callable[[httpx.Client, int], None]  # the k-th request of one hot read


def hot_reads(engine: sa.Engine, wids: list[str]) -> dict[str, Read]:
    """The six reads ``measure`` times, by name; ``wids``: the runs whose header and diagnosis are read."""
    partitions = [f"{history.PARKED_PARTITION_PREFIX}{k}" for k in range(8)]
    lists = ("status=DELAYED&limit=20", "name=RunIntent&status=SUCCESS&limit=20", "partition=hist-3&limit=20")

    def header(http: httpx.Client, k: int) -> None:
        http.get(f"/api/runs/{wids[k % len(wids)]}").raise_for_status()

    def run_list(http: httpx.Client, k: int) -> None:
        http.get(f"/api/ops/wf?{lists[k % len(lists)]}").raise_for_status()

    def inbox(http: httpx.Client, _k: int) -> None:
        http.get("/api/hitl/inbox").raise_for_status()

    def queue_depth(http: httpx.Client, _k: int) -> None:
        http.get("/api/ops/queue-depth").raise_for_status()

    def diagnosis(http: httpx.Client, k: int) -> None:
        http.get(f"/api/runs/{wids[k % len(wids)]}/diagnosis").raise_for_status()

    def batch_dry_run(_http: httpx.Client, k: int) -> None:
        """The selection of ``kodo ops cancel --dry-run --run-status waiting_input --partition hist-parked-<k>``."""
        where = Filter(run_statuses=["waiting_input"], partitions=[partitions[k % 8]], limit=1000, oldest_first=True)
        with engine.connect() as conn:
            dbos_workflows.select(conn, where)

    return {
        "header": header,
        "list": run_list,
        "inbox": inbox,
        "queueDepth": queue_depth,
        "diagnosis": diagnosis,
        "batchDryRun": batch_dry_run,
    }


def measure(
    engine: sa.Engine, http: httpx.Client, *, requests: int = 200, burst: int = 100, baseline: float | None = None
) -> dict[str, Any]:
    """Each hot read ``requests`` times, then a burst of ``burst`` auto-approved runs (see the docstring)."""
    if not 0 <= requests <= 10_000 or not 0 <= burst <= 2_000:
        raise InvalidInput("--requests must be 0..10000 and --burst 0..2000")
    with engine.connect() as conn:
        wids = history.sample_workflows(conn)
    if requests and not wids:
        raise InvalidInput("no runs to read: seed first (kodo bench history seed)")
    clock = cpu_clock()
    reads = hot_reads(engine, wids)
    result: dict[str, Any] = {"counts": _as_dict(_counts(engine)), "requests": requests, "reads": {}}
    for name in READS if requests else ():
        result["reads"][name] = _time_read(reads[name], http, requests)
    if burst:
        result["burst"] = _burst(http, burst)
        if baseline:
            result["burst"]["ratioToBaseline"] = round(result["burst"]["runsPerSecond"] / baseline, 3)
    result["machine"] = {
        **_shares(clock, cpu_clock()),
        "cores": os.cpu_count() or 0,
        "loadAverage1m": round(os.getloadavg()[0], 2),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return result


def _time_read(read: Read, http: httpx.Client, requests: int) -> dict[str, float]:
    read(http, 0)  # warm: the first request of a route pays for its imports and plans
    samples = []
    for k in range(requests):
        began = time.perf_counter()
        read(http, k)
        samples.append((time.perf_counter() - began) * 1000)
    return percentiles(samples)


def _burst(http: httpx.Client, runs: int) -> dict[str, Any]:
    """``runs`` auto-approved runs over 8 partitions, each followed to its end by long-poll: runs/s."""
    began = time.monotonic()
    deadline = began + 600
    tag = int(time.time())
    with ThreadPoolExecutor(16) as pool:
        wids = list(pool.map(lambda n: start_run(http, f"burst {tag}-{n}", f"burst-p{n % 8}", auto=True), range(runs)))
        list(pool.map(lambda wid: _until(http, wid, "end", {"SUCCESS"}, deadline), wids))
    seconds = time.monotonic() - began
    return {"runs": runs, "seconds": round(seconds, 2), "runsPerSecond": round(runs / seconds, 2)}
