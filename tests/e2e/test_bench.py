"""``kodo bench`` against a real ``kodo up``: every scenario reports what it claims, and the oracles hold after."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbos import DBOSClient
from sqlalchemy.engine import make_url

from helpers import oracle_violations
from kodo.bench.bench import run_bench
from kodo.errors import InvalidInput
from kodo.settings import Settings
from processes import KodoProcess, clean_env, run_cli


def _bench(up: KodoProcess, *args: str, reps: int = 1) -> dict[str, object]:
    result = run_cli(["bench", *args, "--reps", str(reps), "--timeout", "120"], up.env)
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


@pytest.mark.timeout(420)  # a dozen bench commands; the suite's 180 s is a hang guard for one-scenario tests
def test_bench_scenarios_report_their_figures_and_leave_the_oracles_empty(
    spawn: Callable[..., KodoProcess], engine: sa.Engine
) -> None:
    """Every scenario: per-repetition figures, min/median/max, CPU of server and Postgres; no oracle rows."""
    up = spawn("up", INTENT_QUEUE_RATE_LIMIT_PER_PERIOD="100000", SBX_QUEUE_RATE_LIMIT_PER_PERIOD="100000")
    burst = _bench(up, "burst", "--n", "6", "--partitions", "3", "--concurrency", "2", reps=2)
    reps = burst["repetitions"]
    assert isinstance(reps, list) and len(reps) == 2
    for rep in reps:
        assert rep["runs"] == 6 and rep["failed"] == 0 and rep["pollers"] == 2 and rep["runsPerSecond"] > 0
        assert rep["cpuSecondsPerRun"] > 0 and rep["postgresCpuSecondsPerRun"] >= 0 and rep["serverProcesses"] >= 1
        # kodo up's API answers /healthz from a process of its own; the worker (kodo up itself) is found
        # through app.executors, outside the API's tree
        assert rep["workerCpuSecondsPerRun"] > 0 and rep["workerProcesses"] == 1
        assert rep["clientCpuSecondsPerRun"] > 0 and rep["machineCpuSecondsPerRun"] > 0
        # every phase is checkpointed: begin (CompileST, ApplyPatchST, park), resume (DecideST), the
        # child's enqueue, its result, ExecuteST, and the child's executeTask and settleExecution
        assert rep["dbosOperationsPerRun"] >= 7
        assert rep["oracles"] == {}  # checked after each repetition (a violation also fails the command)
        assert 0 <= rep["cpuStealPercent"] <= rep["cpuBusyPercent"] + rep["cpuStealPercent"] <= 100
    summary = burst["summary"]
    assert isinstance(summary, dict) and summary["cpuStealPercent"] is not None
    spread = summary["runsPerSecond"]
    assert spread["min"] <= spread["median"] <= spread["max"]
    latency = _bench(up, "latency", "--n", "2")
    assert isinstance(latency["summary"], dict) and latency["summary"]["approveToSuccessMs.p50"]["median"] > 0
    timed = latency["repetitions"][0]  # start → SUCCESS counts the gate, the approval and the rest
    assert timed["startToSuccessMs"]["p50"] >= timed["approveToSuccessMs"]["p50"] > 0
    origins = "SELECT origin, count(*) FROM app.human_interactions GROUP BY origin"
    with engine.connect() as conn:
        decided = dict(conn.execute(sa.text(origins)).tuples().all())
    automatic = _bench(up, "latency", "--n", "2", "--auto")
    timed = automatic["repetitions"][0]  # runs that approve themselves: no gate to time, no approval sent
    assert timed["autoApprove"] is True and "approveToSuccessMs" not in timed and timed["startToSuccessMs"]["n"] == 2
    with engine.connect() as conn:
        after = dict(conn.execute(sa.text(origins)).tuples().all())
    assert after == decided | {"auto": decided.get("auto", 0) + 2}
    api = _bench(up, "api", "--n", "5", "--concurrency", "2")
    assert isinstance(api["summary"], dict) and api["summary"]["requestMs.p95"]["median"] > 0
    assert all(api["repetitions"][0]["routeMs"][route]["n"] == 5 for route in ("intent", "start", "artifact"))
    with engine.connect() as conn:
        runs_before = conn.execute(sa.text("SELECT count(*) FROM app.runs")).scalar_one()
    ceiling = _bench(up, "ceiling", "--n", "6", "--partitions", "3")
    for rep in ceiling["repetitions"]:  # the run's DBOS skeleton: three workflows, seven operations, no kodo rows
        assert rep["runs"] == 6 and rep["failed"] == 0 and rep["runsPerSecond"] > 0
        assert rep["dbosOperationsPerRun"] >= 7
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM app.runs")).scalar_one() == runs_before
        skeleton = conn.execute(
            sa.text("SELECT name, count(*) FROM dbos.workflow_status WHERE name LIKE 'Ceiling%' GROUP BY name")
        ).all()
    assert dict(skeleton) == {"CeilingBegin": 6, "CeilingResume": 6, "CeilingTask": 6}
    inline = _bench(up, "ceiling", "--n", "6", "--partitions", "3", "--shape", "inline")
    for rep in inline["repetitions"]:  # the continuation on sbxQ runs its task: two workflows, five operations
        assert rep["shape"] == "inline" and rep["failed"] == 0 and rep["oracles"] == {}
        assert 5 <= rep["dbosOperationsPerRun"] < 7
    with engine.connect() as conn:
        queued = conn.execute(
            sa.text(
                "SELECT name, queue_name, count(*) FROM dbos.workflow_status WHERE name LIKE 'Ceiling%' "
                "GROUP BY name, queue_name"
            )
        ).all()
    assert {(name, queue): count for name, queue, count in queued} == {
        ("CeilingBegin", "intentQ"): 12,
        ("CeilingResume", "intentQ"): 6,
        ("CeilingTask", "sbxQ"): 6,
        ("CeilingResumeInline", "sbxQ"): 6,
    }
    refused = run_cli(["bench", "burst", "--n", "1", "--shape", "inline"], up.env)
    assert refused.returncode != 0 and "No such option '--shape'" in refused.stderr
    paired = _bench(up, "burst", "--n", "4", "--partitions", "2", "--concurrency", "1", "--against", "ceiling")
    for rep in paired["repetitions"]:  # each burst repetition right after its own ceiling repetition
        assert rep["failed"] == 0 and rep["ceilingRunsPerSecond"] > 0
        assert rep["ratioToCeiling"] == round(rep["runsPerSecond"] / rep["ceilingRunsPerSecond"], 3)
    assert isinstance(paired["summary"], dict) and paired["summary"]["ratioToCeiling"]["median"] > 0
    refused = run_cli(["bench", "latency", "--n", "1", "--against", "ceiling"], up.env)
    assert refused.returncode != 0 and "No such option '--against'" in refused.stderr
    waited = _bench(up, "burst", "--n", "4", "--partitions", "2", "--follow", "wait")
    for rep in waited["repetitions"]:  # each run followed by long-polls: to its plan gate, then to its end
        assert rep["follow"] == "wait" and rep["failed"] == 0 and rep["pollers"] == 0 and rep["runsPerSecond"] > 0
    waited_latency = _bench(up, "latency", "--n", "2", "--follow", "wait")
    assert waited_latency["repetitions"][0]["follow"] == "wait"
    assert waited_latency["summary"]["approveToSuccessMs.p50"]["median"] > 0
    refused = run_cli(["bench", "api", "--n", "1", "--follow", "wait"], up.env)
    assert refused.returncode != 0 and "No such option '--follow'" in refused.stderr
    hitl = _bench(up, "hitl", "--n", "2")
    assert isinstance(hitl["summary"], dict) and hitl["summary"]["replyToResumeMs.p50"]["median"] > 0
    environment = hitl["environment"]
    assert isinstance(environment, dict) and environment["cpus"] >= 1 and environment["dbos"]
    with engine.connect() as conn:
        assert oracle_violations(conn) == {}
        failed = conn.execute(
            sa.text("SELECT count(*) FROM app.runs WHERE status IN ('failed', 'canceled', 'retries_exceeded')")
        ).scalar_one()
        assert failed == 0  # the api scenario's runs park at their plan gate, like the predecessor's k6 loop


def test_bench_counts_the_worker_processes_of_a_split_topology(spawn: Callable[..., KodoProcess]) -> None:
    """Against ``kodo api`` + ``kodo worker``: the worker's CPU is found through app.executors and reported."""
    spawn("worker", INTENT_QUEUE_RATE_LIMIT_PER_PERIOD="100000", SBX_QUEUE_RATE_LIMIT_PER_PERIOD="100000")
    api = spawn("api")
    report = _bench(api, "burst", "--n", "4", "--partitions", "2", "--concurrency", "1")
    for rep in report["repetitions"]:  # type: ignore[attr-defined]
        assert rep["failed"] == 0 and rep["serverProcesses"] == 1 and rep["workerProcesses"] == 1
        assert rep["workerCpuSecondsPerRun"] > 0 and rep["cpuSecondsPerRun"] > 0
        assert len(rep["workerRssMB"]) == 1 and rep["workerRssMB"][0] > 20 and rep["serverRssMB"] > 20
    summary = report["summary"]
    assert isinstance(summary, dict) and summary["workerCpuSecondsPerRun"]["median"] > 0


def test_bench_counts_every_api_process_of_kodo_up(spawn: Callable[..., KodoProcess]) -> None:
    """``kodo up --api-processes 2``: both API processes are the server's CPU, the worker's is kodo up's alone."""
    up = spawn(
        "up",
        args=("--api-processes", "2"),
        INTENT_QUEUE_RATE_LIMIT_PER_PERIOD="100000",
        SBX_QUEUE_RATE_LIMIT_PER_PERIOD="100000",
    )
    report = _bench(up, "burst", "--n", "4", "--partitions", "2", "--concurrency", "1")
    for rep in report["repetitions"]:  # type: ignore[attr-defined]
        assert rep["failed"] == 0 and rep["serverProcesses"] == 2 and rep["workerProcesses"] == 1
        assert rep["cpuSecondsPerRun"] > 0 and rep["workerCpuSecondsPerRun"] > 0
        assert len(rep["workerRssMB"]) == 1  # kodo up's own: neither API process is taken for a worker


def test_bench_refuses_targets_off_this_machine(database_url: str, tmp_path: Path) -> None:
    """The benchmark only talks to loopback: another host is refused before any request."""
    env = clean_env(DATABASE_URL=database_url, KODO_HOME=str(tmp_path / "home"))
    result = run_cli(["bench", "latency", "--n", "1", "--base", "http://10.0.0.1:3001"], env)
    assert result.returncode != 0 and "loopback" in result.stderr


def test_bench_measures_a_server_without_kodo_database(spawn: Callable[..., KodoProcess], settings: Settings) -> None:
    """Without kodo's database (how it measures the predecessor), the burst and api still measure the server:
    its CPU found by the port it listens on, Postgres by --postgres-port; DBOS counts left out; no ceiling."""
    up = spawn("up", INTENT_QUEUE_RATE_LIMIT_PER_PERIOD="100000", SBX_QUEUE_RATE_LIMIT_PER_PERIOD="100000")
    base = f"http://127.0.0.1:{up.env['PORT']}"
    postgres_port = make_url(up.env["DATABASE_URL"]).port
    options = {"repetitions": 1, "partitions": 2, "concurrency": 2, "auto": False, "timeout_s": 120}

    def no_client() -> DBOSClient:
        raise AssertionError("a target without kodo's database never gets a DBOS client")

    burst = run_bench(
        base, None, settings, scenario="burst", runs=4, dbos_client=no_client, postgres_port=postgres_port, **options
    )
    rep = burst["repetitions"][0]
    assert rep["failed"] == 0 and rep["runsPerSecond"] > 0 and rep["pollsAnswered"] >= 4 and rep["acceptSeconds"] > 0
    assert rep["requestsPerSecond"] > rep["pollsPerSecond"] > 0  # the polls, plus accepting and approving
    assert rep["cpuSecondsPerRun"] > 0 and rep["serverProcesses"] >= 1 and rep["postgresCpuSecondsPerRun"] > 0
    assert "dbosOperationsPerRun" not in rep and burst["environment"]["postgres"] is None
    api = run_bench(base, None, settings, scenario="api", runs=3, dbos_client=no_client, **options)
    assert api["repetitions"][0]["routeMs"]["header"]["n"] == 3
    with pytest.raises(InvalidInput, match="kodo target"):
        run_bench(base, None, settings, scenario="ceiling", runs=1, dbos_client=no_client, **options)


def test_repetitions_are_not_throttled_by_the_ones_before(spawn: Callable[..., KodoProcess]) -> None:
    """With a rate limit of 4 starts a minute per partition, a ceiling then a burst, twice, all finish: each
    repetition and its ceiling start their runs in partitions of their own (shared ones waited a minute)."""
    up = spawn("up", INTENT_QUEUE_RATE_LIMIT_PER_PERIOD="4", SBX_QUEUE_RATE_LIMIT_PER_PERIOD="4")
    result = run_cli(
        ["bench", "burst", "--n", "2", "--partitions", "1", "--reps", "2", "--against", "ceiling", "--timeout", "50"],
        up.env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    for rep in report["repetitions"]:
        assert rep["failed"] == 0 and rep["runs"] == 2 and rep["ceilingRunsPerSecond"] > 0


def test_the_bench_fails_when_a_repetition_leaves_an_oracle_violated(
    spawn: Callable[..., KodoProcess], engine: sa.Engine
) -> None:
    """The SQL oracles are checked after every repetition: a violation is reported with its repetition, and the
    command fails after printing its figures."""
    up = spawn("up", INTENT_QUEUE_RATE_LIMIT_PER_PERIOD="100000", SBX_QUEUE_RATE_LIMIT_PER_PERIOD="100000")
    _bench(up, "burst", "--n", "2", "--partitions", "1")
    with engine.begin() as conn:  # one sandbox receipt seen twice: what a re-run ExecuteST would leave
        conn.execute(
            sa.text(
                "UPDATE app.mock_receipts SET seen_count = 2 "
                "WHERE receipt_key = (SELECT min(receipt_key) FROM app.mock_receipts)"
            )
        )
    result = run_cli(["bench", "burst", "--n", "1", "--partitions", "1", "--reps", "1"], up.env)
    assert result.returncode == 1
    assert json.loads(result.stdout)["repetitions"][0]["oracles"] == {"duplicate receipts": 1}
    assert "SQL oracles violated after the benchmark: repetition 1: duplicate receipts (1 row(s))" in result.stderr
