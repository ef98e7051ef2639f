"""The arithmetic of ``kodo bench``'s reports (spreads, percentiles, the machine's busy share) and how it finds
and talks to any server speaking the same API."""

from __future__ import annotations

import os
import socket

import httpx
import pytest

from kodo.bench.bench import Bench, run_id, start_body
from kodo.bench.figures import spread, summarize
from kodo.bench.probe import listener_pid, machine_share
from kodo.bench.scale import bound
from kodo.settings import Settings


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


def test_listener_pid_finds_the_process_listening_on_a_port() -> None:
    """A server that does not say its PID (the predecessor's /healthz) is found by the port it listens on."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert listener_pid(server.getsockname()[1]) == os.getpid()
    with socket.socket() as unused:  # bound, never listening: nobody
        unused.bind(("127.0.0.1", 0))
        assert listener_pid(unused.getsockname()[1]) is None


def test_the_start_body_speaks_both_servers() -> None:
    """autoApprove is sent only when asked (the predecessor refuses unknown fields); the run id is workflowID."""
    assert start_body("it_1", "p0", auto=False) == {"intentId": "it_1", "queuePartitionKey": "p0"}
    assert start_body("it_1", "p0", auto=True)["autoApprove"] is True
    assert run_id({"workflowID": "wf_9", "status": "ENQUEUED"}, "it_1") == "wf_9"
    assert run_id({"status": "ENQUEUED"}, "it_1") == "it_1"


def test_the_scale_curve_names_what_bounds_it() -> None:
    """A busy machine bounds the curve by its cores (the busiest point named); an idle one by waits."""
    busy = [
        {"workers": 1, "cpuBusyPercent": 91.0, "cpuStealPercent": 1.0, "machineCpuSecondsPerRun": 0.14},
        {"workers": 2, "cpuBusyPercent": 98.5, "cpuStealPercent": 2.0, "machineCpuSecondsPerRun": 0.15},
    ]
    assert "cores: 98.5% busy at 2 worker(s)" in bound(busy)
    assert bound([{"workers": 1, "cpuBusyPercent": 60.0}]).startswith("waits, not CPU")


def _latency_against(header: dict[str, str], *, auto: bool) -> None:
    """One latency run against a server whose every run header is ``header``."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/api/intents":
            return httpx.Response(201, json={"intentId": "intent-1"})
        if request.method == "POST" and request.url.path == "/api/runs":
            return httpx.Response(201, json={"workflowID": "intent-1"})
        if request.method == "POST" and request.url.path.endswith("/approve-plan"):
            return httpx.Response(202, json={})
        return httpx.Response(200, json=header)

    base = "http://127.0.0.1:9"
    bench = Bench(base, None, Settings(), pid=None, timeout_s=10, dbos_client=lambda: pytest.fail("no DBOS client"))
    bench.http.close()
    bench.http = httpx.Client(base_url=base, transport=httpx.MockTransport(answer))
    try:
        bench.latency(1, tag="unit", auto=auto)
    finally:
        bench.close()


def test_latency_fails_on_a_run_it_would_not_be_timing() -> None:
    """``bench latency`` refuses to report a run that did not end SUCCESS, or an ``--auto`` run left at its gate."""
    with pytest.raises(RuntimeError, match="ended ERROR"):
        _latency_against({"status": "ERROR", "nextAction": "REPAIR"}, auto=False)
    with pytest.raises(RuntimeError, match="ended WAITING_INPUT"):
        _latency_against({"status": "WAITING_INPUT", "nextAction": "APPROVE_PLAN"}, auto=True)
