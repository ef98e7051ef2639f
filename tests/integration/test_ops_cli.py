"""``kodo ops`` in process (click's runner) against a live in-process worker: every subcommand, audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from helpers import table_counts, wait_status, wait_until
from kodo.cli import cli
from kodo.settings import Settings
from ops_helpers import dbos_status, new_run, ops_audit


def kodo(settings: Settings, *args: str, stdin: str | None = None) -> Result:
    env = {"DATABASE_URL": str(settings.database_url), "KODO_HOME": str(settings.home)}
    return CliRunner().invoke(cli, ["ops", *args], env=env, input=stdin, catch_exceptions=False)


def test_inspect_fork_retry_and_repro_from_the_cli(
    client: TestClient, engine: sa.Engine, settings: Settings, tmp_path: Path
) -> None:
    """steps/get/list/fork/retry-from-step/list-failed/why/repro/executors/queues; fork lines are `<wid>\\t<fork>`."""
    assert client.post("/slowstep?wf=slow-c&sleep=1").status_code == 202
    wait_until(lambda: dbos_status(engine, "slow-c") == "SUCCESS", what="slow-c")
    steps = json.loads(kodo(settings, "steps", "slow-c").stdout)
    assert [s["functionId"] for s in steps] == [1, 2, 3]
    assert kodo(settings, "list", "--name", "SlowStep").output.split() == ["slow-c"]
    listed = [json.loads(line) for line in kodo(settings, "list", "slow-c", "--format", "json").output.splitlines()]
    assert listed[0]["workflowName"] == "SlowStep"
    forked = kodo(settings, "fork", "slow-c", "--step", "3", "--actor", "cli", "--reason", "fix")
    assert forked.exit_code == 0, forked.output
    wid, fork_id = forked.stdout.strip().split("\t")
    assert wid == "slow-c" and fork_id != wid
    retried = kodo(settings, "retry-from-step", "slow-c", "--step", "3", "--actor", "cli", "--reason", "again")
    assert retried.exit_code == 0
    too_far = kodo(settings, "fork", "slow-c", "--step", "9", "--actor", "cli", "--reason", "nope")
    assert too_far.exit_code == 1 and "FAIL slow-c: fork stepN 9 exceeds max step 3" in too_far.output
    audit = ops_audit(engine, "slow-c")
    assert [(a["op"], a["actor"], a["reason"]) for a in audit] == [
        ("fork", "cli", "fix"),
        ("fork", "cli", "retry-from-step:again"),
    ]
    assert json.loads(kodo(settings, "get", "slow-c").stdout)["audit"][0]["reason"] == "retry-from-step:again"

    failing = new_run(client, "broken", partition="cli", autoApprove=True, constraints={"testCommand": "FAIL_ME"})
    assert wait_status(client, failing, {"SUCCESS", "ERROR"})["status"] == "ERROR"
    wait_until(lambda: dbos_status(engine, failing) == "ERROR", what="RunIntent ERROR")
    assert failing in kodo(settings, "list-failed").output.split()
    why = kodo(settings, "why", failing)
    assert why.exit_code == 0 and why.output.startswith("FAILED: run ") and "CMD_NONZERO" in why.output
    pack = tmp_path / "pack.json"
    assert kodo(settings, "repro", failing, "--out", str(pack)).exit_code == 0
    assert json.loads(pack.read_text())["meta"]["workflowId"] == failing
    view: dict[str, Any] = json.loads(kodo(settings, "executors").stdout)
    assert view["executors"][0]["alive"] is True
    assert "throughput" in json.loads(kodo(settings, "queues").stdout)
    assert failing in {row["workflow_id"] for row in json.loads(kodo(settings, "inbox").stdout)}
    assert json.loads(kodo(settings, "slow", "--min-ms", "0").stdout)  # every checkpoint took ≥ 0 ms
    assert kodo(settings, "get", "nope").exit_code == 1


def test_batch_selection_dry_run_and_refusals(client: TestClient, engine: sa.Engine, settings: Settings) -> None:
    """Parked runs cancelled by filter (--run-status, --partition) after a dry run; ids by --stdin resume them."""
    wids = [new_run(client, f"park {n}", partition="cli-batch") for n in range(4)]
    other = new_run(client, "keep me", partition="cli-other")
    for wid in [*wids, other]:
        wait_status(client, wid, {"WAITING_INPUT"})
        wait_until(lambda wid=wid: dbos_status(engine, wid) == "SUCCESS", what="parked")
    with engine.connect() as conn:
        before = table_counts(conn)
    selection = ["--run-status", "waiting_input", "--partition", "cli-batch"]
    dry = kodo(settings, "cancel", *selection, "--actor", "ops", "--reason", "drain", "--dry-run")
    assert dry.exit_code == 0 and "dry-run: would cancel 4 workflow(s)" in dry.output
    assert len(dry.stdout.split()) == 4
    assert kodo(settings, "cancel", "--actor", "ops", "--reason", "drain").exit_code == 2  # nothing selected
    assert kodo(settings, "cancel", *selection, "--reason", "drain").exit_code == 2  # no actor
    assert kodo(settings, "cancel", *selection, "--actor", "ops", "--reason", " ").exit_code == 1  # blank reason
    with engine.connect() as conn:
        assert table_counts(conn) == before
    done = kodo(settings, "cancel", *selection, "--actor", "ops", "--reason", "drain")
    assert done.exit_code == 0 and "cancel: 4 ok, 0 failed" in done.output
    for wid in wids:
        assert client.get(f"/api/runs/{wid}").json()["status"] == "CANCELLED"
    assert client.get(f"/api/runs/{other}").json()["status"] == "WAITING_INPUT"
    ids = kodo(settings, "list", "--run-status", "canceled", "--limit", "100").output
    resumed = kodo(settings, "resume", "--stdin", "--actor", "ops", "--reason", "redrive", stdin=ids)
    assert resumed.exit_code == 0 and "resume: 4 ok, 0 failed" in resumed.output
    for wid in wids:
        assert client.get(f"/api/runs/{wid}").json()["status"] == "WAITING_INPUT"
    again = kodo(settings, "resume", *wids[:1], "--actor", "ops", "--reason", "twice")
    assert again.exit_code == 1 and "FAIL" in again.output


def test_a_filter_that_matches_nothing_names_the_similar_one(client: TestClient, settings: Settings) -> None:
    """`--tenant tenant-A` (the runbooks' word) matching nothing says `--partition tenant-A` would match, and back."""
    wid = new_run(client, "tenant words", partition="tenant-A")
    wait_status(client, wid, {"WAITING_INPUT"})
    audit = ("--actor", "cli", "--reason", "shed")
    by_tenant = kodo(settings, "cancel", "--tenant", "tenant-A", "--dry-run", *audit)
    assert by_tenant.exit_code == 0 and "would cancel 0" in by_tenant.output
    assert "--partition tenant-A" in by_tenant.output and "queue partition" in by_tenant.output
    by_partition = kodo(settings, "cancel", "--partition", "tenant-A", "--dry-run", *audit)
    assert wid in by_partition.stdout.split() and "hint" not in by_partition.output
    listed = kodo(settings, "list", "--tenant", "tenant-A")
    assert listed.stdout == "" and "--partition tenant-A" in listed.output
    nothing = kodo(settings, "cancel", "--partition", "no-such-partition", "--dry-run", *audit)
    assert "would cancel 0" in nothing.output and "hint" not in nothing.output
