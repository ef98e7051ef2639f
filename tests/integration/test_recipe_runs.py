"""The canonical start ``POST /api/run``: content-addressed identity, replay, drift, policy and budget 400s
with zero writes, runtime budgets, sandbox templates, evals and fixtures — in process, real Postgres + DBOS."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.testclient import TestClient

from helpers import oracle_violations, table_counts, wait_status
from kodo.identity import sha256_hex, task_key_for
from kodo.settings import Settings

TERMINAL = {"SUCCESS", "ERROR", "CANCELLED"}
BUDGET = {"maxFanout": 10, "maxSBXMinutes": 5, "maxArtifactsMB": 100, "maxRetriesPerStep": 1, "maxWallClockMs": 60000}


def body(recipe: str = "compile-default", v: str = "v1", form: dict[str, Any] | None = None, **opts: Any) -> Any:
    return {
        "recipeRef": {"id": recipe, "v": v},
        "formData": {"goal": "recipe run"} if form is None else form,
        "opts": {"queuePartitionKey": "tenant-A", **opts},
    }


def start(client: TestClient, payload: Any, expect: int = 201) -> dict[str, Any]:
    response = client.post("/api/run", json=payload)
    assert response.status_code == expect, response.text
    return dict(response.json())


def scalar(engine: sa.Engine, query: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(query), params).scalar()


def cli(settings: Settings, *args: str) -> Any:
    from kodo.cli import cli as kodo

    env = {"DATABASE_URL": settings.database_url or "", "KODO_HOME": str(settings.home)}
    return CliRunner().invoke(kodo, list(args), env=env, catch_exceptions=False)


def test_seed_000_walkthrough_starts_a_content_addressed_run(client: TestClient, engine: sa.Engine) -> None:
    """Seed 000's body (maxWallClockMs spelling) → 201 ih_<sha256> run with recipe identity; replay is 200."""
    seed = body(form={"goal": "throughput-test"}, lane="interactive", budget=BUDGET)
    header = start(client, seed)
    spec_hash = scalar(engine, "SELECT hash FROM app.recipe_versions WHERE id='compile-default' AND v='v1'")
    intent = {"goal": "throughput-test", "inputs": {"topic": "general"}, "constraints": {}}
    assert header["workflowID"] == "ih_" + sha256_hex(intent) and header["intentHash"] == sha256_hex(intent)
    assert header["recipeRef"] == {"id": "compile-default", "v": "v1"} and header["recipeHash"] == spec_hash
    assert header["budget"]["maxWallClockMS"] == 60000 and "maxWallClockMs" not in header["budget"]
    assert header["isReplay"] is False and header["lane"] == "interactive" and header["priority"] == 1
    wid = header["workflowID"]
    assert wait_status(client, wid, {"WAITING_INPUT"})["nextAction"] == "APPROVE_PLAN"
    replay = start(client, {**seed, "opts": {**seed["opts"], "budget": {**BUDGET}}}, expect=200)
    assert replay["isReplay"] is True and replay["workflowID"] == wid
    assert client.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    done = wait_status(client, wid, TERMINAL)
    assert done["status"] == "SUCCESS" and done["budgetViolation"] is None
    assert done["evalSummary"] == {"total": 1, "passed": 1, "failed": 0}
    evals = client.get(f"/api/runs/{wid}/evals").json()
    assert [(e["checkId"], e["pass"]) for e in evals] == [("stdout-captured", True)]
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT json, recipe_id, recipe_hash FROM app.intents WHERE id = :i"), {"i": wid})
        stored = row.one()
        assert stored.json == intent and stored.recipe_id == "compile-default" and stored.recipe_hash == spec_hash
        assert oracle_violations(conn) == {}


def test_fifty_concurrent_identical_starts_make_one_run(client: TestClient, engine: sa.Engine) -> None:
    """50 concurrent identical POST /api/run: one 201, 49 replays, one intent, one run, one workflow."""
    payload = body(form={"goal": "idempotent"}, autoApprove=True, traceId="t-50")
    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(lambda _: client.post("/api/run", json=payload), range(50)))
    assert sorted(r.status_code for r in responses) == [200] * 49 + [201]
    wids = {r.json()["workflowID"] for r in responses}
    assert len(wids) == 1 and sum(r.json()["isReplay"] for r in responses) == 49
    wid = wids.pop()
    counts = [
        scalar(engine, "SELECT count(*) FROM app.intents WHERE id = :w", w=wid),
        scalar(engine, "SELECT count(*) FROM app.runs WHERE workflow_id = :w", w=wid),
        scalar(engine, "SELECT count(*) FROM dbos.workflow_status WHERE workflow_uuid = :w", w=wid),
    ]
    assert counts == [1, 1, 1]
    assert wait_status(client, wid, TERMINAL)["status"] == "SUCCESS"


def test_identity_drift_and_draft_versions(client: TestClient, engine: sa.Engine) -> None:
    """Same intent with another budget is 409 drift; a draft starts only with allowDraft (else 409, no writes)."""
    header = start(client, body(form={"goal": "drift"}, budget=BUDGET))
    other = {**BUDGET, "maxFanout": 3}
    drift = client.post("/api/run", json=body(form={"goal": "drift"}, budget=other))
    assert drift.status_code == 409
    assert [d["field"] for d in drift.json()["drift"]] == ["budget"]
    assert drift.json()["drift"][0]["existing"]["maxFanout"] == 10
    draft = {**_spec("draft-recipe"), "fixtures": [{"id": "f", "formData": {"goal": "g"}}]}
    assert client.post("/api/recipes/import", json={"id": "d", "versions": [draft]}).status_code == 201
    with engine.connect() as conn:
        before = table_counts(conn)
    refused = client.post("/api/run", json=body("draft-recipe"))
    assert refused.status_code == 409 and refused.json()["status"] == "draft"
    assert "allowDraft" in refused.json()["error"]
    with engine.connect() as conn:
        assert table_counts(conn) == before
    allowed = start(client, body("draft-recipe", allowDraft=True, autoApprove=True))
    assert allowed["recipeRef"] == {"id": "draft-recipe", "v": "v1"}
    assert wait_status(client, allowed["workflowID"], TERMINAL)["status"] == "SUCCESS"
    wait_status(client, header["workflowID"], {"WAITING_INPUT"})


def _spec(recipe_id: str, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": recipe_id,
        "v": "v1",
        "name": recipe_id,
        "formSchema": {"type": "object", "properties": {"goal": {"type": "string"}, "tests": {"type": "array"}}},
        "intentTmpl": {"goal": "{{formData.goal}}", "inputs": {}, "constraints": {}},
        "wfEntry": "RunIntent",
        "queue": "intentQ",
        "limits": {"maxSteps": 8, "maxFanout": 4, "maxSbxMin": 5, "maxTokens": 100},
        "eval": [{"kind": "file_exists", "id": "out", "glob": "artifact://run/*/step/ExecuteST/task/*/stdout.log"}],
        "fixtures": [{"id": "f", "formData": {"goal": "g", "nope": 1}}],
    }
    return {**spec, **changes}


def test_policy_template_and_budget_400s_write_nothing(client: TestClient, engine: sa.Engine) -> None:
    """Every schema, template, policy and ingress-budget refusal of POST /api/run is a 400; no row anywhere."""
    loose = _spec("loose", intentTmpl={"goal": "{{formData.goal}} {{formData.nope}}", "inputs": {}, "constraints": {}})
    on_sbx = _spec("on-sbx", queue="sbxQ", fixtures=[{"id": "f", "formData": {"goal": "g"}}])
    assert client.post("/api/recipes/import", json={"id": "t", "versions": [loose, on_sbx]}).status_code == 201
    workload = {"concurrency": 1, "steps": 1, "sandboxMinutes": 1}
    policy = "queue_policy_violation"
    cases: list[tuple[str, Any, str | None, str]] = [
        ("malformed json", "{bad", None, "invalid json"),
        ("no recipeRef", {"formData": {}}, None, "recipeRef"),
        ("unknown top-level field", {**body(), "extra": 1}, None, "extra"),
        ("unknown opts field", body(recipeName="x"), None, "recipeName"),
        ("both wall-clock spellings", body(budget={**BUDGET, "maxWallClockMS": 1}), None, "maxWallClockMs"),
        ("required goal missing", body(form={}), None, "formData.goal: is required"),
        ("unknown form field", body(form={"goal": "x", "color": "red"}), None, "formData.color: unknown field"),
        ("form field wrong type", body(form={"goal": 5}), None, "expected string"),
        ("template key missing", body("loose", allowDraft=True), None, "missing template key: formData.nope"),
        ("no partition key", {**body(), "opts": {}}, policy, "queuePartitionKey is required"),
        ("blank partition key", body(queuePartitionKey="  "), policy, "must not be blank"),
        ("parent on sbxQ (opts)", body(queueName="sbxQ"), policy, "must use intentQ"),
        ("parent on sbxQ (recipe)", body("on-sbx", allowDraft=True), policy, "must use intentQ"),
        ("recipe fan-out cap", body(workload={**workload, "concurrency": 11}), policy, "concurrency 11 > 10"),
        ("recipe step cap", body(workload={**workload, "steps": 33}), policy, "steps 33 > 32"),
        ("recipe sandbox cap", body(workload={**workload, "sandboxMinutes": 16}), policy, "sandboxMinutes 16 > 15"),
        ("budget fan-out", body(workload={**workload, "steps": 11}, budget=BUDGET), policy, "budget:maxFanout"),
        (
            "budget sandbox minutes",
            body(workload={**workload, "sandboxMinutes": 6}, budget=BUDGET),
            policy,
            "budget:maxSBXMinutes",
        ),
        ("budget wall clock", body(timeoutMS=60001, budget=BUDGET), policy, "budget:maxWallClockMS"),
        ("blank tenant", body(tenantId=" "), policy, "tenantId must not be blank"),
    ]
    for case, payload, code, fragment in cases:
        with engine.connect() as conn:
            before = table_counts(conn)
        if isinstance(payload, str):
            response = client.post("/api/run", content=payload, headers={"content-type": "application/json"})
        else:
            response = client.post("/api/run", json=payload)
        assert response.status_code == 400, (case, response.text)
        assert response.json().get("code") == code and fragment in response.text, (case, response.text)
        with engine.connect() as conn:
            assert table_counts(conn) == before, case
    missing = client.post("/api/run", json=body("no-such-recipe"))
    assert missing.status_code == 404 and missing.json() == {"error": "recipe version not found: no-such-recipe@v1"}


def test_runtime_budgets_write_one_budget_artifact(client: TestClient, engine: sa.Engine) -> None:
    """Fan-out, wall-clock and retry budgets exceeded at runtime: one BUDGET artifact, retries_exceeded."""
    fanout = start(
        client,
        body("json-report", form={"topic": "t", "sections": ["a", "b", "c"]}, budget={**BUDGET, "maxFanout": 2}),
    )
    clock = start(client, body(form={"goal": "slow"}, autoApprove=True, budget={**BUDGET, "maxWallClockMs": 1}))
    retries = start(
        client,
        body("python-unittest", form={"repo": "", "testCommand": "FLAKY_INFRA_FAIL"}, budget={**BUDGET}),
    )
    expected = {
        fanout["workflowID"]: ("maxFanout", "fanout", "budget:maxFanout: observed 3 > limit 2 (runtime)"),
        clock["workflowID"]: ("maxWallClockMS", "fanout", "budget:maxWallClockMS: observed "),
        retries["workflowID"]: ("maxRetriesPerStep", "completion", "budget:maxRetriesPerStep: observed 2 > limit 1"),
    }
    for wid, (metric, boundary, message) in expected.items():
        done = wait_status(client, wid, TERMINAL, timeout=60)
        assert done["status"] == "ERROR" and done["durableStatus"] == "retries_exceeded", done
        assert done["nextAction"] == "REPAIR" and done["error"]["code"] == "BUDGET_EXCEEDED"
        assert done["error"]["message"].startswith(message), done["error"]
        violation = done["budgetViolation"]
        assert violation["metric"] == metric and violation["boundary"] == boundary and violation["outcome"] == "blocked"
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT task_key, idx, kind, uri FROM app.artifacts WHERE run_id = :r AND step_id = 'BUDGET'"),
                {"r": done["runId"]},
            ).all()
            executed = conn.execute(
                sa.text("SELECT count(*) FROM app.run_steps WHERE run_id = :r AND step_id = 'ExecuteST'"),
                {"r": done["runId"]},
            ).scalar_one()
        assert [(r.task_key, r.idx, r.kind) for r in rows] == [(metric, 0, "json_diagnostic")]
        assert rows[0].uri == f"artifact://run/{done['runId']}/step/BUDGET/task/{metric}/{metric}.json"
        assert executed == 0
    sandboxes = scalar(engine, "SELECT count(*) FROM app.sbx_runs WHERE run_id = :r", r=fanout["runId"])
    assert sandboxes == 0  # the fan-out budget stops the run before any child starts


def test_templates_resolve_cold_then_hot_and_drift_fails(
    client: TestClient, engine: sa.Engine, settings: Settings
) -> None:
    """Cold until registered, hot after (template in the task key, boot recorded); drift is an error."""
    cold = start(client, body(form={"goal": "cold"}, autoApprove=True))
    assert wait_status(client, cold["workflowID"], TERMINAL)["status"] == "SUCCESS"
    registered = cli(settings, "sbx", "template", "register", "compile-default@v1", "--template-id", "tpl_demo")
    assert registered.exit_code == 0 and "\ttpl_demo\tregistered" in registered.output
    key = registered.output.split("\t")[0]
    assert key.startswith("compile-default:v1:")
    clash = cli(settings, "sbx", "template", "register", "compile-default@v1", "--template-id", "tpl_other")
    assert clash.exit_code == 1 and "sbx template drift" in clash.output
    hot = start(client, body(form={"goal": "hot"}, autoApprove=True))
    assert wait_status(client, hot["workflowID"], TERMINAL)["status"] == "SUCCESS"
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT run_id, task_key, request FROM app.sbx_runs WHERE run_id IN (:a, :b)"),
            {"a": cold["runId"], "b": hot["runId"]},
        ).all()
        boots = conn.execute(
            sa.text("SELECT run_id, inline FROM app.artifacts WHERE uri LIKE '%/sbx-boot.json' ORDER BY run_id")
        ).all()
    by_run = {row.run_id: row for row in rows}
    assert by_run[cold["runId"]].request["source"] == "cold" and by_run[hot["runId"]].request["source"] == "hot"
    assert by_run[cold["runId"]].request["templateKey"] == key == by_run[hot["runId"]].request["templateKey"]
    assert by_run[hot["runId"]].request["templateId"] == "tpl_demo" and by_run[hot["runId"]].request["envRef"]
    request = {"cmd": "echo", "test": None, "templateKey": key, "templateRef": "tpl_demo"}
    assert by_run[hot["runId"]].task_key == task_key_for(hot["workflowID"], hot["runId"], request)
    assert {row.inline["json"]["source"] for row in boots} == {"cold", "hot"}
    assert all(isinstance(row.inline["json"]["bootMs"], int) for row in boots)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE app.sbx_templates SET template_key = 'tampered' WHERE template_id = 'tpl_demo'"))
    drifted = start(client, body(form={"goal": "drifted"}, autoApprove=True))
    done = wait_status(client, drifted["workflowID"], TERMINAL)
    assert done["status"] == "ERROR" and done["error"]["code"] == "SBX_TEMPLATE_DRIFT"


def test_eval_checks_are_stored_exactly_once(client: TestClient, engine: sa.Engine) -> None:
    """All five check kinds run after ExecuteST, one row each, visible on the run; a re-write adds nothing."""
    from kodo.errors import Conflict
    from kodo.store import eval_results

    stdout = "artifact://run/*/step/ExecuteST/task/*/stdout.log"
    checks = [
        {"kind": "file_exists", "id": "a-out", "glob": "artifact://run/*/step/ExecuteST/task/*/files/out.json"},
        {
            "kind": "jsonschema",
            "id": "b-schema",
            "artifact": "artifact://run/*/step/ExecuteST/task/*/files/out.json",
            "schema": {"type": "object"},
        },
        {"kind": "rowcount_gte", "id": "c-rows", "artifact": stdout, "n": 2},
        {"kind": "regex", "id": "d-regex", "artifact": stdout, "re": "^OK: echo"},
        {"kind": "diff_le", "id": "e-diff", "artifactA": stdout, "artifactB": stdout, "max": 0},
        {"kind": "regex", "id": "f-fails", "artifact": stdout, "re": "never printed"},
    ]
    form = {"goal": "evals", "tests": ["x", "y"]}
    spec = _spec(
        "evals",
        eval=checks,
        intentTmpl={"goal": "{{formData.goal}}", "inputs": {}, "constraints": {"tests": "{{formData.tests}}"}},
        fixtures=[{"id": "f", "formData": form}],
    )
    assert client.post("/api/recipes/import", json={"id": "e", "versions": [spec]}).status_code == 201
    header = start(client, body("evals", form=form, allowDraft=True, autoApprove=True))
    done = wait_status(client, header["workflowID"], TERMINAL)
    assert done["status"] == "SUCCESS" and done["evalSummary"] == {"total": 6, "passed": 5, "failed": 1}
    evals = {e["checkId"]: e for e in client.get(f"/api/runs/{header['runId']}/evals").json()}
    assert {k: v["pass"] for k, v in evals.items()} == {
        "a-out": True,
        "b-schema": True,
        "c-rows": True,
        "d-regex": True,
        "e-diff": True,
        "f-fails": False,
    }
    assert evals["c-rows"]["kind"] == "rowcount_gte" and "2 row(s)" in evals["c-rows"]["reason"]
    start(client, body("evals", form=form, allowDraft=True, autoApprove=True), expect=200)
    first = evals["a-out"]
    with engine.begin() as conn:
        again = eval_results.record(
            conn,
            run_id=header["runId"],
            check_id="a-out",
            kind="file_exists",
            passed=True,
            reason=first["reason"],
            payload=first["payload"],
        )
        assert again is False
        try:
            eval_results.record(
                conn, run_id=header["runId"], check_id="a-out", kind="file_exists", passed=False, reason="x", payload={}
            )
            raise AssertionError("a divergent eval result was accepted")
        except Conflict:
            pass
    assert scalar(engine, "SELECT count(*) FROM app.eval_results WHERE run_id = :r", r=header["runId"]) == 6
    duplicates = scalar(
        engine, "SELECT count(*) FROM (SELECT 1 FROM app.eval_results GROUP BY run_id, check_id HAVING count(*) > 1) d"
    )
    assert duplicates == 0


def test_fixtures_run_fans_out_and_reports(client: TestClient, engine: sa.Engine, settings: Settings) -> None:
    """kodo recipes fixtures run: every trial of every fixture runs once (a re-run replays) and gets a verdict."""
    import json

    ran = cli(settings, "recipes", "fixtures", "run", "json-report@v1", "--trials", "2", "--timeout", "60")
    assert ran.exit_code == 0, ran.output
    report = json.loads(ran.stdout)  # worker threads of this process log to stderr meanwhile
    assert report["summary"] == {"pass": 1, "fail": 0, "flaky": 0, "timeout": 0}
    trials = report["fixtures"]["two-sections"]["trials"]
    assert [t["trial"] for t in trials] == [1, 2] and len({t["runId"] for t in trials}) == 2
    assert all(t["status"] == "succeeded" and all(t["evals"].values()) for t in trials)
    again = json.loads(cli(settings, "recipes", "fixtures", "run", "json-report@v1", "--trials", "2").stdout)
    assert [t["runId"] for t in again["fixtures"]["two-sections"]["trials"]] == [t["runId"] for t in trials]
    assert all(t["replay"] for t in again["fixtures"]["two-sections"]["trials"])
    partitions = scalar(
        engine,
        "SELECT string_agg(DISTINCT queue_partition_key, ',') FROM dbos.workflow_status WHERE queue_name = 'intentQ'",
    )
    assert partitions == "fixtures"  # the DBOS partition is the key's tenant (one concurrency cap per tenant)
    keys = scalar(engine, "SELECT string_agg(DISTINCT queue_partition_key, ',') FROM app.runs")
    assert keys == "fixtures:json-report"
    lanes = scalar(engine, "SELECT string_agg(DISTINCT options->>'lane', ',') FROM app.runs")
    assert lanes == "batch"
