"""The execution ledger in process: one row per sandbox execution, its API, CLI and run page, its idempotency
stores (local workspace file, mock receipt table) and the restarted executor's sweep of cut-off executions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.testclient import TestClient

from helpers import oracle_violations, table_counts, wait_status
from kodo.adapters.sandbox import SandboxRequest
from kodo.adapters.sandbox.local import LocalSandbox
from kodo.adapters.sandbox.mock import MockSandbox
from kodo.cli import cli
from kodo.main import MockResultBook
from kodo.ops.executors import Heartbeat
from kodo.settings import Settings
from kodo.store import executions

TERMINAL = {"SUCCESS", "ERROR", "CANCELLED"}


def _run(client: TestClient, goal: str, **constraints: Any) -> str:
    intent = client.post("/api/intents", json={"goal": goal, "inputs": {}, "constraints": constraints})
    assert intent.status_code == 201, intent.text
    wid = str(intent.json()["intentId"])
    body = {"intentId": wid, "queuePartitionKey": "tenant-a", "autoApprove": True}
    assert client.post("/api/runs", json=body).status_code in {200, 201}
    return wid


def test_each_task_has_one_finished_execution_listed_by_api_cli_and_page(
    client: TestClient, engine: sa.Engine, settings: Settings
) -> None:
    """Two tasks → two `finished` executions (exit 0, NONE), the same by run id or workflow id, in the CLI and page."""
    wid = _run(client, "ledger", testCommand="echo", tests=["a", "b"])
    assert wait_status(client, wid, TERMINAL)["status"] == "SUCCESS"
    rows = client.get(f"/api/runs/{wid}/executions").json()
    summary = sorted((r["status"], r["attempt"], r["exit"], r["errCode"]) for r in rows)
    assert summary == [("finished", 1, 0, "NONE")] * 2
    assert len({r["taskKey"] for r in rows}) == 2 and all(r["startedAt"] <= r["finishedAt"] for r in rows)
    run_id = client.get(f"/api/runs/{wid}").json()["runId"]
    assert client.get(f"/api/runs/{run_id}/executions").json() == rows
    assert client.get(f"/api/runs/{wid}/executions?limit=1&offset=1").json() == rows[1:]
    env = {"DATABASE_URL": str(settings.database_url), "KODO_HOME": str(settings.home)}
    printed = CliRunner().invoke(cli, ["ops", "executions", wid], env=env, catch_exceptions=False)
    assert printed.exit_code == 0 and all(r["executionId"] in printed.output for r in rows)
    as_json = CliRunner().invoke(cli, ["ops", "executions", run_id, "--json"], env=env, catch_exceptions=False)
    assert json.loads(as_json.output) == rows
    page = client.get(f"/runs/{wid}/view").text
    assert "Sandbox executions" in page and page.count('class="execution" data-status="finished"') == 2
    with engine.connect() as conn:
        assert oracle_violations(conn) == {}
        kept = conn.execute(sa.text("SELECT execution_id FROM app.mock_sandbox_results ORDER BY 1")).scalars().all()
    assert kept == sorted(r["executionId"] for r in rows)


def test_infrastructure_retries_are_one_execution_per_attempt(client: TestClient) -> None:
    """FLAKY_INFRA_FAIL: attempts 1 and 2 finish BOOT_FAIL, attempt 3 finishes NONE; each its own execution."""
    wid = _run(client, "flaky ledger", testCommand="FLAKY_INFRA_FAIL")
    assert wait_status(client, wid, TERMINAL, timeout=60)["status"] == "SUCCESS"
    rows = client.get(f"/api/runs/{wid}/executions").json()
    assert [(r["attempt"], r["status"], r["errCode"]) for r in rows] == [
        (1, "finished", "BOOT_FAIL"),
        (2, "finished", "BOOT_FAIL"),
        (3, "finished", "NONE"),
    ]


def test_bad_execution_queries_are_4xx_and_write_nothing(client: TestClient, engine: sa.Engine) -> None:
    """Unknown run → 404; bad, repeated or unknown query parameters → 400; no row is written."""
    wid = _run(client, "ledger queries")
    wait_status(client, wid, TERMINAL)
    with engine.connect() as conn:
        before = table_counts(conn)
    assert client.get("/api/runs/nope/executions").status_code == 404
    for query in ("limit=0", "limit=501", "limit=x", "offset=-1", "limit=1&limit=2", "cursor=1"):
        response = client.get(f"/api/runs/{wid}/executions?{query}")
        assert response.status_code == 400, (query, response.text)
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_local_sandbox_keeps_the_result_in_the_workspace_and_recalls_it(tmp_path: Path) -> None:
    """A finished command's result is at .kodo/executions/<key>.json; recall returns it; the command ran once."""
    sandbox = LocalSandbox(use_bwrap=False)
    request = SandboxRequest(
        task_key="t",
        cmd='echo "$KODO_EXECUTION_ID" >> trace.log; echo out',
        workdir=str(tmp_path),
        env={"KODO_EXECUTION_ID": "e-1"},
        idempotency_key="key-1",
        execution_id="e-1",
    )
    assert sandbox.recall(request) is None
    result = sandbox.run(request)
    assert result.err_code == "NONE" and (tmp_path / ".kodo/executions/key-1.json").is_file()
    stored = sandbox.recall(request)
    assert stored is not None and stored.execution_id == "e-1" and stored.result.stdout == "out\n"
    assert stored.result.exit == 0 and (tmp_path / "trace.log").read_text() == "e-1\n"
    assert not list((tmp_path / ".kodo/executions").glob("*.tmp"))


def test_kept_results_stay_out_of_a_git_workspace_status(tmp_path: Path) -> None:
    """In a git workspace, .kodo/ is excluded (.git/info/exclude): git status shows only the command's own file."""
    subprocess.run(["git", "init", "--quiet", str(tmp_path)], check=True)
    request = SandboxRequest(
        task_key="t", cmd="echo hi > made.txt", workdir=str(tmp_path), idempotency_key="k", execution_id="e"
    )
    assert LocalSandbox(use_bwrap=False).run(request).err_code == "NONE"
    status = subprocess.run(["git", "status", "--porcelain"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert status.stdout.splitlines() == ["?? made.txt"] and (tmp_path / ".kodo/executions/k.json").is_file()


def test_mock_sandbox_keeps_results_in_its_receipt_table(engine: sa.Engine, settings: Settings) -> None:
    """The mock writes its result to app.mock_sandbox_results when it runs; recall reads it; no key, no row."""
    sandbox = MockSandbox(MockResultBook(engine, settings.db_outage_max_sec))
    request = SandboxRequest(task_key="t", cmd="echo x", idempotency_key="k-mock", execution_id="e-mock")
    assert sandbox.recall(request) is None
    sandbox.run(request)
    stored = sandbox.recall(request)
    assert stored is not None and stored.execution_id == "e-mock" and stored.result.stdout == "OK: echo x\n"
    sandbox.run(SandboxRequest(task_key="u", cmd="echo y"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM app.mock_sandbox_results")).scalar_one() == 1


def test_a_restarted_executor_marks_its_cut_off_executions_interrupted(
    client: TestClient, engine: sa.Engine, settings: Settings
) -> None:
    """An execution left `started` by an executor's previous life is `interrupted` when it registers again."""
    wid = _run(client, "sweep")
    wait_status(client, wid, TERMINAL)
    run_id = client.get(f"/api/runs/{wid}").json()["runId"]
    with engine.begin() as conn:
        for name, owner in (("cut-off", "exec-x"), ("other", "exec-y")):
            executions.start(
                conn,
                execution_id=name,
                run_id=run_id,
                task_key=f"task-{name}",
                attempt=1,
                idempotency_key=f"key-{name}",
                provider="mock",
                executor_id=owner,
                pid=1,
            )
    Heartbeat(engine, None, settings, executor_id="exec-x", role="worker").register()  # type: ignore[arg-type]
    with engine.connect() as conn:
        cut = executions.get(conn, "cut-off")
        other = executions.get(conn, "other")
    assert cut is not None and cut.status == "interrupted" and cut.interrupted_by == "exec-x (start)"
    assert cut.interrupted_at is not None and other is not None and other.status == "started"
