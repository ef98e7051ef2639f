"""What one ``kodo chaos`` iteration asks of kodo, over HTTP on loopback, and what it checks afterwards.

The load: fan-out runs (two sandbox tasks each, auto-approved), a run that parks at its plan gate and is
approved, and a run cancelled while its command runs and then resumed. Every sandbox command is a trace
command: it appends ``start <execution id>`` and ``end <execution id>`` to ``trace-<test>.log`` in the run's
workspace (a clone of a real git repository), so the commands that really ran can be compared with the
execution ledger.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import sqlalchemy as sa

from kodo.store import executions, oracles, runs

TRACE_COMMAND = (
    'bash -c \'echo "start $KODO_EXECUTION_ID" >> trace-$0.log; sleep {sleep}; '
    'echo "end $KODO_EXECUTION_ID" >> trace-$0.log\''
)
AT_REST = {"SUCCESS", "ERROR", "CANCELLED", "WAITING_INPUT"}
ACTOR = {"actor": "kodo-chaos", "reason": "chaos: cancel and resume under load"}


def make_repository(path: Path) -> Path:
    """A small real git repository that every chaos run's workspace is cloned from."""
    if (path / ".git").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    (path / "README.md").write_text("kodo chaos fixture\n", encoding="utf-8")
    identity = ["-c", "user.name=kodo-chaos", "-c", "user.email=chaos@localhost"]
    for args in (["init", "--quiet"], ["add", "README.md"], [*identity, "commit", "--quiet", "-m", "fixture"]):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, timeout=60)
    return path


class Endpoint(Protocol):
    """Where the API is, and what to do when it does not answer (restart whatever died)."""

    @property
    def url(self) -> str: ...

    def recover(self) -> None: ...


@dataclass
class Load:
    """The runs one iteration started, by the workflow id; which of them wait for approval or a cancel."""

    runs: list[str] = field(default_factory=list)
    gated: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


def _call(api: Endpoint, method: str, path: str, deadline: float, **kwargs: Any) -> httpx.Response | None:
    """One HTTP call, retried while the API is down (it may be the process being killed) until ``deadline``."""
    while time.monotonic() < deadline:
        try:
            return httpx.request(method, api.url + path, timeout=10, **kwargs)
        except httpx.HTTPError:
            api.recover()
            time.sleep(0.2)
    return None


def _start(api: Endpoint, repo: Path, deadline: float, *, tests: list[str], sleep: float, auto: bool) -> str:
    constraints = {"testCommand": TRACE_COMMAND.format(sleep=sleep), "tests": tests}
    body = {"goal": "chaos", "inputs": {"repo": str(repo)}, "constraints": constraints}
    intent = _call(api, "POST", "/api/intents", deadline, json=body)
    if intent is None or intent.status_code != 201:
        raise RuntimeError(f"chaos: POST /api/intents failed: {intent.text if intent else 'API down'}")
    wid = str(intent.json()["intentId"])
    run = {"intentId": wid, "queuePartitionKey": "chaos", "autoApprove": auto}
    started = _call(api, "POST", "/api/runs", deadline, json=run)
    if started is None or started.status_code not in {200, 201}:
        raise RuntimeError(f"chaos: POST /api/runs failed: {started.text if started else 'API down'}")
    return wid


def submit(api: Endpoint, repo: Path, *, fan_out: int, deadline: float) -> Load:
    """Start the iteration's runs (they then proceed on their own)."""
    load = Load()
    for _ in range(fan_out):
        load.runs.append(_start(api, repo, deadline, tests=["t1", "t2"], sleep=0.3, auto=True))
    gated = _start(api, repo, deadline, tests=["g1"], sleep=0.1, auto=False)
    load.runs.append(gated)
    load.gated.append(gated)
    cancelled = _start(api, repo, deadline, tests=["c1"], sleep=2.0, auto=True)
    load.runs.append(cancelled)
    load.cancelled.append(cancelled)
    return load


def status(api: Endpoint, wid: str, deadline: float) -> str:
    response = _call(api, "GET", f"/api/runs/{wid}", deadline)
    return str(response.json().get("status")) if response is not None and response.status_code == 200 else "UNKNOWN"


def operate(api: Endpoint, load: Load, deadline: float) -> None:
    """The human and the operator: approve the gated runs, cancel the cancellable one and resume it."""
    for wid in load.gated:
        while time.monotonic() < deadline and status(api, wid, deadline) not in AT_REST:
            time.sleep(0.2)
        if status(api, wid, deadline) == "WAITING_INPUT":
            _call(api, "POST", f"/api/runs/{wid}/approve-plan", deadline, json={"approvedBy": "kodo-chaos"})
    for wid in load.cancelled:
        _call(api, "POST", f"/api/ops/wf/{wid}/cancel", deadline, json=ACTOR)
        if status(api, wid, deadline) == "CANCELLED":
            _call(api, "POST", f"/api/ops/wf/{wid}/resume", deadline, json=ACTOR)


def settle(api: Endpoint, load: Load, deadline: float) -> list[str]:
    """Wait until every run is at rest (terminal or waiting for a human); returns the ones that never got there."""
    pending = list(load.runs)
    while pending and time.monotonic() < deadline:
        pending = [wid for wid in pending if status(api, wid, deadline) not in AT_REST]
        if pending:
            time.sleep(0.3)
    return pending


@dataclass
class Findings:
    runs: int = 0
    failed: int = 0  # runs that ended failed (every chaos command succeeds: a crash must not fail a run)
    interrupted: int = 0
    reused: int = 0
    duplicates: int = 0  # more than one finished execution of one task attempt
    untracked: int = 0  # a command that ran (its trace) with no ledger row, or a finished row with no trace
    oracle_rows: int = 0
    violated: list[str] = field(default_factory=list)


def _traced(workspace: Path) -> set[str]:
    started = set()
    for trace in workspace.glob("trace-*.log"):
        for line in trace.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("start "):
                started.add(line.split(" ", 1)[1].strip())
    return started


def check(engine: sa.Engine, workspaces: Path, load: Load, *, dead_after_s: float) -> Findings:
    """Compare the ledger with the trace files of each run, and run every SQL oracle."""
    found = Findings(runs=len(load.runs))
    with engine.connect() as conn:
        for wid in load.runs:
            run = runs.get(conn, wid)
            if run is None:
                continue
            found.failed += run.status in {"failed", "retries_exceeded"}
            ledger = executions.list_for_run(conn, run.id)
            traced = _traced(workspaces / run.id)
            ids = {e.execution_id for e in ledger}
            finished = [e for e in ledger if e.status == "finished"]
            found.interrupted += sum(e.status == "interrupted" for e in ledger)
            found.reused += sum(e.status == "reused" for e in ledger)
            per_attempt = [(e.task_key, e.attempt) for e in finished]
            found.duplicates += len(per_attempt) - len(set(per_attempt))
            found.untracked += len(traced - ids) + sum(e.execution_id not in traced for e in finished)
        violations = oracles.violations(
            conn, dead_after_s=dead_after_s, workspaces_dir=workspaces, settle_s=oracles.SETTLE_S
        )
    found.oracle_rows = sum(len(rows) for rows in violations.values())
    found.violated = sorted(violations)
    return found
