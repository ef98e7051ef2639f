"""/metrics after real runs (API and worker admin app), and the structured log events of a run."""

from __future__ import annotations

import re

import sqlalchemy as sa
import structlog
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from helpers import wait_status
from kodo.main import Worker, admin_app
from kodo.settings import Settings


def _start(client: TestClient, goal: str, partition: str, auto: bool = True) -> str:
    intent = client.post("/api/intents", json={"goal": goal, "inputs": {}, "constraints": {}}).json()["intentId"]
    body = {"intentId": intent, "queuePartitionKey": partition, "autoApprove": auto}
    started = client.post("/api/runs", json=body)
    assert started.status_code == 201, started.text
    return str(started.json()["workflowID"])


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition ``text`` (labels must match exactly)."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if found == labels:
            return float(match.group(3))
    raise AssertionError(f"no sample {name}{labels}")


def test_metrics_after_runs(client: TestClient, settings: Settings, engine: sa.Engine, worker: Worker) -> None:
    """Runs by status, step latency histograms, queue depth/age, gates, sandbox minutes and HTTP latency
    are in /metrics on the API and (the SQL ones) on the worker's admin app."""
    done = _start(client, "metrics ok", "p-metrics")
    waiting = _start(client, "metrics wait", "p-metrics", auto=False)
    wait_status(client, done, {"SUCCESS"})
    wait_status(client, waiting, {"WAITING_INPUT"})
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert _sample(text, "kodo_runs", status="succeeded") == 1
    assert _sample(text, "kodo_runs", status="waiting_input") == 1
    assert _sample(text, "kodo_runs", status="failed") == 0
    assert _sample(text, "kodo_step_duration_seconds_count", step="CompileST") == 2
    assert _sample(text, "kodo_step_duration_seconds_count", step="ExecuteST") == 1
    assert _sample(text, "kodo_step_duration_seconds_bucket", step="ExecuteST", le="+Inf") == 1
    assert _sample(text, "kodo_step_duration_seconds_sum", step="DecideST") > 0
    assert _sample(text, "kodo_gates_open", purpose="approve-plan") == 1
    assert _sample(text, "kodo_gate_oldest_open_age_seconds", purpose="approve-plan") >= 0
    with engine.connect() as conn:
        sbx = conn.execute(sa.text("SELECT count(*) FROM app.sbx_runs")).scalar_one()
    assert _sample(text, "kodo_sandbox_runs_total", provider="mock", err_code="NONE") == sbx
    assert _sample(text, "kodo_sandbox_minutes_total", provider="mock") >= 0
    # The parked run's continuation waits DELAYED on intentQ, in its partition.
    assert _sample(text, "kodo_queue_workflows", queue="intentQ", partition="p-metrics", status="DELAYED") == 1
    assert _sample(text, "kodo_queue_oldest_age_seconds", queue="intentQ", partition="p-metrics", status="DELAYED") >= 0
    assert (
        _sample(text, "kodo_http_request_duration_seconds_count", method="POST", route="/api/runs", status="201") == 2
    )
    assert _sample(text, "kodo_metrics_database_up") == 1
    with TestClient(admin_app(settings, engine), base_url="http://127.0.0.1") as admin:
        assert admin.get("/healthz").status_code == 200
        worker_text = admin.get("/metrics").text
    assert _sample(worker_text, "kodo_runs", status="succeeded") == 1
    assert _sample(worker_text, "kodo_step_duration_seconds_count", step="CompileST") == 2
    assert _sample(
        worker_text, "kodo_http_request_duration_seconds_count", method="GET", route="/healthz", status="200"
    )


def test_a_run_logs_each_step_and_external_call(client: TestClient) -> None:
    """One `step` event per step attempt and one `external call` per agent/sandbox call, each bound to the
    run's id and workflow id."""
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        wid = _start(client, "log me", "p-logs")
        header = wait_status(client, wid, {"SUCCESS"})
    mine = [e for e in events if e.get("run_id") == header["runId"]]
    steps = [(e["step"], e["attempt"]) for e in mine if e["event"] == "step"]
    assert steps == [("CompileST", 1), ("ApplyPatchST", 1), ("DecideST", 1), ("ExecuteST", 1)]
    assert all(e["workflow_id"] == wid and e["dbos_workflow_id"] == wid for e in mine if e["event"] == "step")
    calls = [e for e in mine if e["event"] == "external call"]
    agent = [(e["call"], e["step"], e["ok"]) for e in calls if e["kind"] == "agent"]
    assert agent == [("plan", "CompileST", True), ("build", "DecideST", True)]
    sandbox = [e for e in calls if e["kind"] == "sandbox"]
    assert sandbox and all(e["err_code"] == "NONE" and e["provider"] == "mock" for e in sandbox)
    assert all(e["dbos_workflow_id"] == e["task_key"] and "duration_ms" in e for e in sandbox)
    assert all(e["log_level"] in {"info", "warning"} for e in calls)
