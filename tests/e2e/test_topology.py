"""Split topology with real processes: ``kodo worker`` executes, ``kodo api`` (never launching DBOS) serves."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import sqlalchemy as sa

from helpers import oracle_violations, wait_until
from processes import KodoProcess


def _status(base: str, wid: str) -> str:
    return str(httpx.get(f"{base}/api/runs/{wid}").json()["status"])


def test_shim_and_worker_with_one_app_version_run_the_golden_flow(
    spawn: Callable[..., KodoProcess], engine: sa.Engine
) -> None:
    """Intent → run → WAITING_INPUT → approve → SUCCESS through the shim, executed by the worker."""
    worker = spawn("worker", DBOS__APPVERSION="demo-v1")
    shim = spawn("api", DBOS__APPVERSION="demo-v1")
    health = httpx.get(f"http://127.0.0.1:{worker.admin_port}/healthz").json()  # type: ignore[attr-defined]
    assert health["ok"] is True and health["role"] == "worker"
    base = f"http://127.0.0.1:{shim.port}"  # type: ignore[attr-defined]
    assert httpx.get(f"{base}/healthz").json()["runtimeMode"] == "api-shim"
    intent = httpx.post(f"{base}/intents", json={"goal": "demo chain", "inputs": {}, "constraints": {}}).json()[
        "intentId"
    ]
    started = httpx.post(
        f"{base}/intents/{intent}/run",
        json={
            "traceId": "po-demo",
            "recipeName": "compile-default",
            "workload": {"concurrency": 1, "steps": 2, "sandboxMinutes": 1},
        },
    )
    assert started.status_code == 202
    run_id = started.json()["runId"]
    wait_until(lambda: _status(base, intent) == "WAITING_INPUT", timeout=30, what="gate")
    header = httpx.get(f"{base}/api/runs/{run_id}").json()
    assert header["topology"] == "api-shim" and header["workflowVersion"] == "demo-v1"
    assert httpx.post(f"{base}/api/runs/{intent}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    wait_until(lambda: _status(base, intent) == "SUCCESS", timeout=30, what="success")
    view = httpx.get(f"{base}/runs/{run_id}").json()
    assert [s["stepId"] for s in view["steps"]] == ["CompileST", "ApplyPatchST", "DecideST", "ExecuteST"]
    with engine.connect() as conn:
        assert oracle_violations(conn) == {}


def test_app_version_mismatch_leaves_runs_queued_and_visible(spawn: Callable[..., KodoProcess]) -> None:
    """A shim on DBOS__APPVERSION=v2 with a v1 worker: the run stays ENQUEUED; the header shows version v2."""
    worker = spawn("worker", DBOS__APPVERSION="v1")
    shim = spawn("api", DBOS__APPVERSION="v2")
    base = f"http://127.0.0.1:{shim.port}"  # type: ignore[attr-defined]
    intent = httpx.post(f"{base}/api/intents", json={"goal": "stuck", "inputs": {}, "constraints": {}}).json()[
        "intentId"
    ]
    body = {"intentId": intent, "queuePartitionKey": "p", "autoApprove": True}
    assert httpx.post(f"{base}/api/runs", json=body).status_code == 201
    worker.wait_healthy(5)
    import time

    time.sleep(3)  # several worker polling rounds (50 ms each)
    header = httpx.get(f"{base}/api/runs/{intent}").json()
    assert header["status"] == "ENQUEUED" and header["dbosStatus"] == "ENQUEUED"
    assert header["appVersion"] == "v2" and header["workflowVersion"] == "v2"
    worker_version = httpx.get(f"http://127.0.0.1:{worker.admin_port}/healthz").json()["appVersion"]  # type: ignore[attr-defined]
    assert worker_version == "v1"


def test_api_processes_share_one_port_and_stop_together(spawn: Callable[..., KodoProcess]) -> None:
    """`kodo api --processes 2`: two shim processes answer on one PORT, a run goes through them, both stop."""
    spawn("worker")
    shim = spawn("api", args=("--processes", "2"))
    base = f"http://127.0.0.1:{shim.port}"  # type: ignore[attr-defined]

    def pids() -> set[int]:  # a new connection each time: the kernel spreads connections over the listeners
        return {int(httpx.get(f"{base}/healthz").json()["pid"]) for _ in range(40)}

    served = wait_until(lambda: len(found := pids()) == 2 and found, timeout=30, what="both API processes")
    intent = httpx.post(f"{base}/api/intents", json={"goal": "two shims", "inputs": {}, "constraints": {}}).json()
    body = {"intentId": intent["intentId"], "queuePartitionKey": "p", "autoApprove": True}
    assert httpx.post(f"{base}/api/runs", json=body).status_code == 201
    wait_until(lambda: _status(base, intent["intentId"]) == "SUCCESS", timeout=30, what="success")
    shim.stop()
    wait_until(lambda: all(_gone(pid) for pid in served), timeout=20, what="both API processes stopped")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])  # the field after the state


def test_worker_processes_stop_with_their_parent(spawn: Callable[..., KodoProcess]) -> None:
    """SIGTERM to `kodo worker --processes 2` stops its second worker too (uvicorn's re-raised SIGTERM once
    killed the parent before it could stop its children, leaving them orphaned)."""
    parent = spawn("worker", args=("--processes", "2"))
    second = f"http://127.0.0.1:{parent.admin_port + 1}/healthz"  # type: ignore[attr-defined]

    def healthy() -> bool:
        try:
            return httpx.get(second).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout=60, what="the second worker")
    assert parent.proc is not None
    children = [pid for pid in _pids() if _parent_of(pid) == parent.proc.pid]
    assert len(children) == 1
    parent.stop()
    wait_until(lambda: _gone(children[0]), timeout=30, what="the second worker stopped")


def _gone(pid: int) -> bool:
    """Exited (or a zombie nobody reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_kodo_up_serves_its_api_from_a_process_of_its_own_that_dies_with_it(
    spawn: Callable[..., KodoProcess],
) -> None:
    """The default ``kodo up``: the worker in the process started, the API on PORT in a child (a core each),
    headers still saying inproc-worker; kill -9 of kodo up takes the API down with it, a restart serves, and
    kill -9 of the API takes kodo up down (they crash as one, as the single process did)."""
    up = spawn("up")
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    api, worker = httpx.get(f"{base}/healthz").json(), httpx.get(f"http://127.0.0.1:{up.admin_port}/healthz").json()  # type: ignore[attr-defined]
    assert up.proc is not None and worker["role"] == "monolith" and worker["pid"] == up.proc.pid
    assert api["role"] == "api" and api["runtimeMode"] == "inproc-worker" and api["pid"] != up.proc.pid
    up.kill9()
    wait_until(lambda: _gone(api["pid"]), timeout=10, what="the API process gone")
    up.start()
    restarted = httpx.get(f"{base}/healthz").json()["pid"]
    assert restarted not in {api["pid"], up.proc.pid}
    os.kill(restarted, signal.SIGKILL)  # and the other way round: a crash of its API is a crash of kodo up
    assert up.proc.wait(timeout=30) == -signal.SIGKILL
