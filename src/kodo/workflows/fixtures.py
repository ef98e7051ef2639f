"""``kodo recipes fixtures run id@v``: fan a version's fixtures out as real runs and flag flaky ones.

Every fixture runs ``trials`` times. A trial is a canonical start with ``allowDraft`` (fixtures exist to
judge drafts and candidates), ``autoApprove``, lane ``batch`` and partition ``fixtures:<id>``; its
intent carries ``inputs.fixture = {recipe, fixture, trial, round}``, so each trial is its own
content-addressed run and running the same round again replays the same runs. When every trial is
terminal (or the timeout passes), each fixture gets a verdict:

* ``pass`` — every trial succeeded and every eval check passed;
* ``fail`` — the trials agree, and not on a pass;
* ``flaky`` — the trials disagree (run status or any eval check's result differs);
* ``timeout`` — some trial did not finish in time.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from dbos import DBOSClient

from kodo.errors import NotFound
from kodo.models import TERMINAL_STATUSES
from kodo.settings import Settings
from kodo.store import eval_results, runs
from kodo.store import recipe_versions as versions
from kodo.workflows import recipes


def outcome(status: str, checks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"status": status, "evals": {c["checkId"]: bool(c["pass"]) for c in checks}}


def verdict(trials: list[dict[str, Any]]) -> str:
    """pass | fail | flaky | timeout for one fixture's trials (see the module doc)."""
    if any(t["status"] not in TERMINAL_STATUSES for t in trials):
        return "timeout"
    distinct = {(t["status"], tuple(sorted(t["evals"].items()))) for t in trials}
    if len(distinct) > 1:
        return "flaky"
    status, checks = next(iter(distinct))
    return "pass" if status == "succeeded" and all(ok for _id, ok in checks) else "fail"


def start_trials(
    engine: sa.Engine, client: DBOSClient, settings: Settings, ref: str, *, trials: int, round_no: int
) -> list[dict[str, Any]]:
    """Start (or replay) every trial of every fixture; returns one row per trial."""
    recipe_id, v = recipes.parse_ref(ref)
    with engine.connect() as conn:
        version = versions.get(conn, recipe_id, v)
    if version is None:
        raise NotFound(f"recipe version not found: {ref}")
    started = []
    opts = {"allowDraft": True, "autoApprove": True, "lane": "batch", "queuePartitionKey": f"fixtures:{recipe_id}"}
    for fixture in version.fixtures:
        for trial in range(1, trials + 1):
            tag = {"recipe": ref, "fixture": fixture["id"], "trial": trial, "round": round_no}
            with engine.begin() as conn:
                run, replay = recipes.start(
                    conn,
                    client,
                    settings,
                    recipe_id=recipe_id,
                    v=v,
                    form_data=fixture["formData"],
                    opts=opts,
                    fixture=tag,
                )
            started.append({"fixture": fixture["id"], "trial": trial, "runId": run.id, "replay": replay})
    return started


def collect(engine: sa.Engine, started: list[dict[str, Any]], *, timeout_s: float) -> dict[str, Any]:
    """Wait (bounded) for every trial to end, then report each fixture's trials and verdict."""
    deadline = time.monotonic() + timeout_s
    while True:
        with engine.connect() as conn:
            states = {row["runId"]: runs.get(conn, row["runId"]) for row in started}
            done = all(run is not None and run.is_terminal for run in states.values())
            if done or time.monotonic() >= deadline:
                trials = []
                for row in started:
                    run = states[row["runId"]]
                    status = run.status if run is not None else "missing"
                    trials.append({**row, **outcome(status, eval_results.list_for_run(conn, row["runId"]))})
                break
        time.sleep(0.25)
    fixtures: dict[str, list[dict[str, Any]]] = {}
    for trial in trials:
        fixtures.setdefault(trial["fixture"], []).append(trial)
    report = {name: {"verdict": verdict(rows), "trials": rows} for name, rows in fixtures.items()}
    counts = {v: sum(1 for r in report.values() if r["verdict"] == v) for v in ("pass", "fail", "flaky", "timeout")}
    return {"fixtures": report, "summary": counts}


def run_fixtures(
    engine: sa.Engine,
    client: DBOSClient,
    settings: Settings,
    ref: str,
    *,
    trials: int = 2,
    round_no: int = 1,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Start every trial, wait for them, and report verdicts (a worker must be running)."""
    started = start_trials(engine, client, settings, ref, trials=trials, round_no=round_no)
    return {"recipe": ref, "round": round_no, **collect(engine, started, timeout_s=timeout_s)}
