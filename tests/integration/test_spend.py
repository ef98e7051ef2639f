"""Spend budgets with the shipped fake model (OpenAI-compatible) behind a live worker: usage in the ledger,
reservations, the budget gate, and the run header's spend."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.testclient import TestClient

from helpers import make_settings, table_counts, wait_status, wait_until
from kodo.adapters.agent.fake_model import FakeModelServer
from kodo.settings import Settings

TERMINAL = {"SUCCESS", "ERROR", "CANCELLED"}
BUDGET = {"maxFanout": 10, "maxSBXMinutes": 5, "maxArtifactsMB": 100, "maxRetriesPerStep": 1, "maxWallClockMS": 600_000}
# kodo-fake costs $1 per million input tokens and $2 per million output tokens (kodo.pricing.DEFAULT_PRICES).
BIG = "kodo-fake: usage=100000x20000"  # each call: $0.10 + $0.04 = $0.14


@pytest.fixture
def fake_model() -> Iterator[FakeModelServer]:
    with FakeModelServer() as server:
        yield server


@pytest.fixture
def settings(
    database_url: str, tmp_path: Path, fake_model: FakeModelServer, request: pytest.FixtureRequest
) -> Settings:
    """A live worker on the fake model; a test may change the environment (indirect parametrize with a dict)."""
    env = {
        "OC_MODE": "live",
        "OC_PROVIDER": "openai",
        "OC_STRICT_MODE": "true",
        "OPENAI_BASE_URL": fake_model.base_url,
        "OPENAI_MODEL": "kodo-fake",
        "KODO_BUDGET_GATE_TIMEOUT_S": "600",
        **getattr(request, "param", {}),
    }
    return make_settings(database_url, tmp_path / "home", **env)


def start(client: TestClient, goal: str, **fields: Any) -> str:
    intent = client.post("/api/intents", json={"goal": goal, "inputs": {}, "constraints": {}}).json()
    body = {"intentId": intent["intentId"], "queuePartitionKey": "spend", "autoApprove": True, **fields}
    response = client.post("/api/runs", json=body)
    assert response.status_code == 201, response.text
    return str(intent["intentId"])


def ledger(engine: sa.Engine, wid: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.step_id, c.mode, c.model, c.input_tokens, c.output_tokens, c.cost_usd, c.priced_usd "
                "FROM app.opencode_calls c JOIN app.runs r ON r.id = c.run_id WHERE r.workflow_id = :w "
                "ORDER BY c.created_at"
            ),
            {"w": wid},
        )
        return [dict(row._mapping) for row in rows]


def reservations(engine: sa.Engine, wid: str) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT s.state, count(*) AS n FROM app.spend_reservations s JOIN app.runs r ON r.id = s.run_id "
                "WHERE r.workflow_id = :w GROUP BY s.state"
            ),
            {"w": wid},
        )
        return {row.state: int(row.n) for row in rows}


def budget_gate(client: TestClient, wid: str) -> dict[str, Any]:
    def pending() -> dict[str, Any] | None:
        found = [g for g in client.get(f"/api/runs/{wid}/gates").json() if g["purpose"] == "budget"]
        return next((g for g in found if g["state"] == "PENDING"), None)

    gate = dict(wait_until(pending, what=f"budget gate of {wid}"))
    wait_until(lambda: client.get(f"/api/runs/{wid}").json()["dbosStatus"] == "DELAYED", what="parked")
    return gate


def test_every_live_call_ledgers_its_usage_and_cost(client: TestClient, engine: sa.Engine) -> None:
    """Each live call's tokens, model and cost (priced at the table) are in the ledger; its hold is settled."""
    wid = start(client, "ledger usage kodo-fake: usage=1000x500", tenantId="acme")
    done = wait_status(client, wid, TERMINAL)
    assert done["status"] == "SUCCESS", done
    calls = ledger(engine, wid)
    assert [c["step_id"] for c in calls] == ["CompileST", "DecideST"]
    for call in calls:
        assert (call["mode"], call["model"], call["input_tokens"], call["output_tokens"]) == (
            "live",
            "kodo-fake",
            1000,
            500,
        )
        assert call["cost_usd"] == call["priced_usd"] == Decimal("0.002")  # 1000 * $1/M + 500 * $2/M
    assert reservations(engine, wid) == {"settled": 2}
    spend = done["spend"]
    assert (spend["costUsd"], spend["tokens"], spend["reservedUsd"]) == (0.004, 3000, 0.0)
    assert spend["tenantTodayUsd"] == 0.004
    metrics = client.get("/metrics").text
    assert 'kodo_agent_tokens_total{kind="input",model="kodo-fake",tenant="acme"} 2000.0' in metrics
    assert 'kodo_agent_tokens_total{kind="output",model="kodo-fake",tenant="acme"} 1000.0' in metrics
    assert 'kodo_agent_cost_usd_total{model="kodo-fake",tenant="acme"} 0.004' in metrics


def test_crossing_max_cost_parks_at_a_budget_gate_and_approval_finishes(client: TestClient, engine: sa.Engine) -> None:
    """maxCostUsd crossed at the second call: the run parks (spend by step, limit, top-up); approved → finishes."""
    wid = start(client, f"pricey {BIG}", budget={**BUDGET, "maxCostUsd": 0.15})
    gate = budget_gate(client, wid)
    details = gate["prompt"]["details"]
    assert (gate["stepID"], details["metric"], details["limit"], details["scope"]) == (
        "DecideST",
        "maxCostUsd",
        0.15,
        "run",
    )
    assert details["spend"]["byStep"] == [
        {
            "step": "CompileST",
            "model": "kodo-fake",
            "calls": 1,
            "inputTokens": 100000,
            "outputTokens": 20000,
            "costUsd": 0.14,
        }
    ]
    assert details["proposedTopUp"]["maxCostUsd"] >= details["observed"]
    header = client.get(f"/api/runs/{wid}").json()
    assert header["status"] == "WAITING_INPUT" and header["nextAction"] == "APPROVE_BUDGET"
    assert reservations(engine, wid) == {"settled": 1}  # nothing held while parked
    with engine.connect() as conn:  # the budget.exceeded webhook event, written with the park
        (event,) = conn.execute(
            sa.text("SELECT data FROM app.webhook_events WHERE type = 'budget.exceeded' AND data->>'workflowId' = :w"),
            {"w": wid},
        ).scalars()
    assert (event["gateKey"], event["metric"], event["limit"]) == (gate["gateKey"], "maxCostUsd", 0.15)
    inbox = next(row for row in client.get("/api/hitl/inbox").json() if row["gateKey"] == gate["gateKey"])
    assert inbox["nextAction"] == "APPROVE_BUDGET" and inbox["details"] == details
    assert "maxCostUsd 0.1" in client.get("/inbox").text  # the console's inbox names the limit hit
    panel = client.get(f"/ui/runs/{wid}/panel").text  # the console shows the gate with its spend and top-up
    assert "Spend limit reached" in panel and f'value="{details["proposedTopUp"]["maxCostUsd"]}"' in panel
    assert "<td>CompileST</td><td>kodo-fake</td>" in panel and 'id="run-spend">$0.14' in panel
    answer = {
        "payload": {"choice": "yes", "maxCostUsd": "1.0"},
        "dedupeKey": "topup",
        "origin": "manual",
    }  # as the form sends it
    assert client.post(f"/api/runs/{wid}/gates/{gate['gateKey']}/reply", json=answer).status_code == 200
    done = wait_status(client, wid, TERMINAL)
    assert done["status"] == "SUCCESS", done
    total = sum(Decimal(c["cost_usd"]) for c in ledger(engine, wid))
    assert total == Decimal("0.28") and done["spend"]["costUsd"] == float(total)
    assert done["spend"]["maxCostUsd"] == 1.0 and done["spend"]["remainingUsd"] == pytest.approx(0.72)


def test_rejected_budget_gate_ends_the_run_with_the_budget_artifact(client: TestClient, engine: sa.Engine) -> None:
    """A "no" to the budget gate ends the run retries_exceeded (BUDGET_EXCEEDED) with one BUDGET artifact."""
    wid = start(client, f"too pricey {BIG}", budget={**BUDGET, "maxCostUsd": 0.15})
    gate = budget_gate(client, wid)
    answer = {"payload": {"choice": "no"}, "dedupeKey": "no", "origin": "manual"}
    assert client.post(f"/api/runs/{wid}/gates/{gate['gateKey']}/reply", json=answer).status_code == 200
    done = wait_status(client, wid, TERMINAL)
    assert done["durableStatus"] == "retries_exceeded" and done["error"]["code"] == "BUDGET_EXCEEDED", done
    with engine.connect() as conn:
        inline = (
            conn.execute(
                sa.text(
                    "SELECT inline FROM app.artifacts a JOIN app.runs r ON r.id = a.run_id "
                    "WHERE r.workflow_id = :w AND a.step_id = 'BUDGET'"
                ),
                {"w": wid},
            )
            .scalars()
            .all()
        )
    assert len(inline) == 1 and inline[0]["metric"] == "maxCostUsd" and inline[0]["outcome"] == "blocked"
    assert reservations(engine, wid) == {"settled": 1}
    assert len(ledger(engine, wid)) == 1  # the second call was never made


def test_bad_spend_budgets_are_400_and_write_nothing(client: TestClient, engine: sa.Engine) -> None:
    """maxTokens/maxCostUsd of the wrong type, sign or name are 400 with zero rows written, on both start routes."""
    intent = client.post("/api/intents", json={"goal": "bad budgets", "inputs": {}, "constraints": {}}).json()
    cases: list[tuple[str, dict[str, Any]]] = [
        ("zero cost", {**BUDGET, "maxCostUsd": 0}),
        ("negative cost", {**BUDGET, "maxCostUsd": -1.5}),
        ("cost as string", {**BUDGET, "maxCostUsd": "1"}),
        ("cost as bool", {**BUDGET, "maxCostUsd": True}),
        ("cost too large", {**BUDGET, "maxCostUsd": 1e12}),
        ("zero tokens", {**BUDGET, "maxTokens": 0}),
        ("fractional tokens", {**BUDGET, "maxTokens": 1.5}),
        ("tokens as string", {**BUDGET, "maxTokens": "100"}),
        ("misspelt", {**BUDGET, "maxCostUSD": 1}),
        ("spend without the rest", {"maxCostUsd": 1}),
    ]
    for case, budget in cases:
        with engine.connect() as conn:
            before = table_counts(conn)
        legacy = client.post(
            "/api/runs", json={"intentId": intent["intentId"], "queuePartitionKey": "p", "budget": budget}
        )
        recipe = client.post(
            "/api/run",
            json={
                "recipeRef": {"id": "compile-default", "v": "v1"},
                "formData": {"goal": "g"},
                "opts": {"queuePartitionKey": "p", "budget": budget},
            },
        )
        assert legacy.status_code == 400 and recipe.status_code == 400, (case, legacy.text, recipe.text)
        with engine.connect() as conn:
            assert table_counts(conn) == before, case


def test_a_spend_budget_is_part_of_run_identity(client: TestClient, engine: sa.Engine) -> None:
    """The same intent started again with another maxCostUsd is a 409 with the budget drift, and writes nothing."""
    intent = client.post("/api/intents", json={"goal": "drift spend", "inputs": {}, "constraints": {}}).json()
    first = {
        "intentId": intent["intentId"],
        "queuePartitionKey": "p",
        "autoApprove": True,
        "budget": {**BUDGET, "maxCostUsd": 1.0},
    }
    assert client.post("/api/runs", json=first).status_code == 201
    assert client.post("/api/runs", json=first).status_code == 200  # the same start is a replay
    wait_status(client, intent["intentId"], TERMINAL)  # the worker's writes are over: counted from here
    with engine.connect() as conn:
        before = table_counts(conn)
    other = client.post("/api/runs", json={**first, "budget": {**BUDGET, "maxCostUsd": 2.0}})
    assert other.status_code == 409 and [d["field"] for d in other.json()["drift"]] == ["budget"], other.text
    with engine.connect() as conn:
        assert table_counts(conn) == before


@pytest.mark.parametrize("settings", [{"OPENAI_MODEL": "gpt-unpriced"}], indirect=True)
def test_a_usd_limit_on_an_unpriced_model_is_a_clear_400(client: TestClient, engine: sa.Engine) -> None:
    """maxCostUsd with a live model that has no price: 400 naming KODO_MODEL_PRICES, nothing written."""
    intent = client.post("/api/intents", json={"goal": "unpriced", "inputs": {}, "constraints": {}}).json()
    with engine.connect() as conn:
        before = table_counts(conn)
    body = {"intentId": intent["intentId"], "queuePartitionKey": "p", "budget": {**BUDGET, "maxCostUsd": 1.0}}
    refused = client.post("/api/runs", json=body)
    assert refused.status_code == 400 and "KODO_MODEL_PRICES" in refused.text and "gpt-unpriced" in refused.text
    with engine.connect() as conn:
        assert table_counts(conn) == before
    tokens_only = client.post("/api/runs", json={**body, "budget": {**BUDGET, "maxTokens": 10_000_000}})
    assert tokens_only.status_code == 201, tokens_only.text  # a token limit needs no price


@pytest.mark.parametrize("settings", [{"OPENAI_MODEL": "gpt-unpriced"}], indirect=True)
def test_a_tenant_usd_limit_on_an_unpriced_model_fails_the_run_before_any_call(
    client: TestClient, engine: sa.Engine, settings: Settings
) -> None:
    """A tenant's USD limit with an unpriced live model: the run fails MODEL_UNPRICED and no call is made."""
    assert budget_set(settings, "cheap", "--daily", "1").exit_code == 0
    wid = start(client, "unpriced tenant", tenantId="cheap")
    done = wait_status(client, wid, TERMINAL)
    assert done["error"]["code"] == "MODEL_UNPRICED" and "KODO_MODEL_PRICES" in done["error"]["message"], done
    assert ledger(engine, wid) == [] and reservations(engine, wid) == {}


def cli(settings: Settings, *args: str) -> Any:
    from kodo.cli import cli as kodo

    env = {"DATABASE_URL": settings.database_url or "", "KODO_HOME": str(settings.home)}
    return CliRunner().invoke(kodo, list(args), env=env, catch_exceptions=False)


def budget_set(settings: Settings, tenant: str, *limits: str) -> Any:
    return cli(settings, "tenants", "budget", "set", tenant, *limits, "--actor", "ops", "--reason", "cap")


def test_tenant_budget_cli_sets_audits_and_refuses_bad_values(settings: Settings, engine: sa.Engine) -> None:
    """`kodo tenants budget set` stores the limits with an audit row; bad amounts exit 2 and write nothing."""
    done = budget_set(settings, "acme", "--daily", "5", "--monthly", "100.5")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["dailyUsd"] == "5" and json.loads(done.output)["monthlyUsd"] == "100.5"
    with engine.connect() as conn:
        before = table_counts(conn)
    for bad in ("0", "-1", "abc", "NaN", "Infinity", "0.000000001", "2000000"):
        refused = budget_set(settings, "acme", "--daily", bad)
        assert refused.exit_code == 2, (bad, refused.output)
    assert budget_set(settings, "acme").exit_code == 2  # neither limit given
    with engine.connect() as conn:
        assert table_counts(conn) == before
    shown = json.loads(cli(settings, "tenants", "budget", "show", "acme").output)
    assert shown["budget"]["dailyUsd"] == "5" and shown["spentTodayUsd"] == "0"
    assert [(a["actor"], a["reason"], a["before"]) for a in shown["audit"]] == [("ops", "cap", None)]
    cleared = budget_set(settings, "acme", "--daily", "none", "--monthly", "7")
    assert json.loads(cleared.output)["dailyUsd"] is None
    assert len(json.loads(cli(settings, "tenants", "budget", "show", "acme").output)["audit"]) == 2


def test_tenant_daily_limit_parks_its_runs_until_the_window_rolls_over(
    client: TestClient, engine: sa.Engine, settings: Settings
) -> None:
    """A tenant's spent daily limit parks two of its runs at budget gates; the next UTC day resumes both."""
    from kodo.workflows import runtime

    now = datetime.now(UTC)
    clock = {"now": now.replace(hour=23, minute=59, second=57)}  # the window rolls over in three seconds
    runtime.install(dataclasses.replace(runtime.services(), clock=lambda: clock["now"]))
    assert (
        cli(settings, "tenants", "budget", "set", "t1", "--daily", "0.10", "--actor", "a", "--reason", "r").exit_code
        == 0
    )
    first = start(client, f"tenant one {BIG}", tenantId="t1", queuePartitionKey="t1a")
    second = start(client, f"tenant two {BIG}", tenantId="t1", queuePartitionKey="t1b")
    gates = [budget_gate(client, wid) for wid in (first, second)]
    assert {g["prompt"]["details"]["metric"] for g in gates} == {"tenantDailyUsd"}
    assert all(g["prompt"]["details"]["scope"] == "tenant" for g in gates)
    assert client.get(f"/api/runs/{first}").json()["spend"]["tenantTodayUsd"] >= 0.14
    clock["now"] = now.replace(hour=0, minute=0, second=5) + timedelta(days=1)  # the next UTC day
    for wid in (first, second):
        done = wait_status(client, wid, TERMINAL)
        assert done["status"] == "SUCCESS", done
    with engine.connect() as conn:
        escalated = conn.execute(
            sa.text("SELECT count(*) FROM app.artifacts WHERE step_id = 'EscalateTimeout'")
        ).scalar()
    assert escalated == 0  # a window that rolled over is not a human's silence
    states = {g["result"]["state"] for wid in (first, second) for g in client.get(f"/api/runs/{wid}/gates").json()}
    assert "WINDOW_ROLLED_OVER" in states and "TIMED_OUT" not in states
    report = json.loads(cli(settings, "ops", "spend", "--tenant", "t1").output)
    assert [(r["tenantId"], r["model"], r["calls"]) for r in report] == [("t1", "kodo-fake", 4)]
    assert Decimal(report[0]["costUsd"]) == Decimal("0.56")


def test_concurrent_reservations_of_one_run_cannot_overspend_together(client: TestClient, engine: sa.Engine) -> None:
    """Two agent calls of one run reserving at once: the run row serialises them, so only the one that fits holds."""
    from kodo.adapters.agent import BUILD_SCHEMA, AgentRequest
    from kodo.workflows import spend
    from kodo.workflows.context import RunContext

    wid = start(client, "two at once", autoApprove=False, budget={**BUDGET, "maxCostUsd": 0.025})
    wait_until(lambda: client.get(f"/api/runs/{wid}").json()["nextAction"] == "APPROVE_PLAN", what="plan gate")
    header = client.get(f"/api/runs/{wid}").json()  # CompileST spent a little; the run is idle at its plan gate
    ctx = RunContext(
        run_id=header["runId"],
        workflow_id=wid,
        intent_id=wid,
        intent={"goal": "two at once", "inputs": {}, "constraints": {}},
        generation=1,
        workload=None,
        auto_approve=False,
        priority=1,
        partition_key=None,
        recipe_id=None,
        recipe_v=None,
        budget=header["budget"],
        tenant_id=None,
        workspace=Path("unused"),
        plan_approval_timeout_s=3600,
    )
    first_held, second_done = threading.Event(), threading.Event()

    def reserve(index: int) -> dict[str, Any]:
        call = AgentRequest(
            run_id=header["runId"],
            step_id="DecideST",
            attempt=index,
            agent="build",
            prompt=f"child {index}",
            schema=BUILD_SCHEMA,
        )
        if index == 2:
            first_held.wait(30)
        with engine.begin() as conn:
            outcome = dict(spend.reserve_in(conn, dataclasses.replace(ctx, partition_key=f"child-{index}"), call))
            if index == 1:  # keep the first hold uncommitted while the second tries (it waits on the run row)
                first_held.set()
                second_done.wait(2)
        if index == 2:
            second_done.set()
        return outcome

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(reserve, [1, 2]))
    assert [next(iter(o)) for o in outcomes] == ["reserved", "parked"], outcomes
    with engine.connect() as conn:
        held = conn.execute(
            sa.text(
                "SELECT count(*), sum(cost_usd) FROM app.spend_reservations WHERE run_id = :r AND state = 'reserved'"
            ),
            {"r": header["runId"]},
        ).one()
        spent = conn.execute(
            sa.text("SELECT sum(cost_usd) FROM app.opencode_calls WHERE run_id = :r"), {"r": header["runId"]}
        ).scalar_one()
    assert held[0] == 1 and spent + held[1] <= Decimal("0.025")


@pytest.mark.parametrize("settings", [{"OC_MODE": "replay"}], indirect=True)
def test_a_replayed_run_shows_what_it_would_have_cost_and_costs_nothing(
    client: TestClient, engine: sa.Engine, settings: Settings
) -> None:
    """A replay fixture's recorded usage is ledgered and priced; the run is charged nothing and holds nothing."""
    from kodo.adapters.agent import PLAN_SCHEMA, AgentRequest, Usage
    from kodo.adapters.agent.replay import ReplayAgent
    from kodo.workflows.agents import compile_prompt

    goal = "replayed spend"
    prompt = compile_prompt({"goal": goal, "inputs": {}, "constraints": {}}, None)
    request = AgentRequest(run_id="-", step_id="CompileST", attempt=1, agent="plan", prompt=prompt, schema=PLAN_SCHEMA)
    sidecar = ReplayAgent(settings.home / "fixtures" / "agent").fixture_path(request).with_suffix(".usage.json")
    sidecar.parent.mkdir(parents=True)
    sidecar.write_text(json.dumps(Usage(model="gpt-4o", input_tokens=10_000, output_tokens=1_000).as_json()))
    wid = start(client, goal, budget={**BUDGET, "maxCostUsd": 0.01})  # the recorded call priced above the limit
    done = wait_status(client, wid, TERMINAL)
    assert done["status"] == "SUCCESS", done
    calls = ledger(engine, wid)
    assert [(c["step_id"], c["mode"], c["model"]) for c in calls] == [
        ("CompileST", "replay", "gpt-4o"),
        ("DecideST", "replay", None),
    ]
    assert calls[0]["priced_usd"] == Decimal("0.035") and calls[0]["cost_usd"] == 0  # 10k x $2.50/M + 1k x $10/M
    assert (done["spend"]["pricedUsd"], done["spend"]["costUsd"], done["spend"]["tokens"]) == (0.035, 0.0, 0)
    assert reservations(engine, wid) == {}


@pytest.mark.parametrize("settings", [{"KODO_BUDGET_GATE_TIMEOUT_S": "1"}], indirect=True)
def test_an_unanswered_budget_gate_ends_the_run_with_one_escalation(client: TestClient, engine: sa.Engine) -> None:
    """No answer by the budget gate's TTL: retries_exceeded with the BUDGET artifact and exactly one escalation."""
    wid = start(client, f"nobody answers {BIG}", budget={**BUDGET, "maxCostUsd": 0.15})
    done = wait_status(client, wid, TERMINAL)
    assert done["durableStatus"] == "retries_exceeded" and done["error"]["code"] == "BUDGET_EXCEEDED", done
    gates = [g for g in client.get(f"/api/runs/{wid}/gates").json() if g["purpose"] == "budget"]
    assert [g["state"] for g in gates] == ["TIMED_OUT"]
    with engine.connect() as conn:
        query = (
            "SELECT a.step_id, count(*) FROM app.artifacts a JOIN app.runs r ON r.id = a.run_id "
            "WHERE r.workflow_id = :w AND a.step_id IN ('BUDGET', 'EscalateTimeout') GROUP BY a.step_id"
        )
        wait_until(lambda: len(conn.execute(sa.text(query), {"w": wid}).all()) == 2, what="escalation")
        assert dict(conn.execute(sa.text(query), {"w": wid}).all()) == {"BUDGET": 1, "EscalateTimeout": 1}


def test_a_recipes_max_cost_is_the_default_of_its_runs(client: TestClient) -> None:
    """A recipe's limits.maxCostUsd holds for a run started without one, and parks it at a budget gate."""
    spec = {
        "id": "pricey",
        "v": "v1",
        "name": "pricey",
        "formSchema": {"type": "object", "properties": {"goal": {"type": "string"}}},
        "intentTmpl": {"goal": "{{formData.goal}}", "inputs": {}, "constraints": {}},
        "wfEntry": "RunIntent",
        "queue": "intentQ",
        "limits": {"maxSteps": 8, "maxFanout": 4, "maxSbxMin": 5, "maxTokens": 100, "maxCostUsd": 0.15},
        "eval": [],
        "fixtures": [{"id": "f", "formData": {"goal": "g"}}],
    }
    assert client.post("/api/recipes/import", json={"id": "pricey", "versions": [spec]}).status_code == 201
    body = {
        "recipeRef": {"id": "pricey", "v": "v1"},
        "formData": {"goal": f"recipe default {BIG}"},
        "opts": {"queuePartitionKey": "recipe", "allowDraft": True, "autoApprove": True},
    }
    started = client.post("/api/run", json=body)
    assert started.status_code == 201, started.text
    wid = started.json()["workflowID"]
    gate = budget_gate(client, wid)
    assert (gate["prompt"]["details"]["metric"], gate["prompt"]["details"]["limit"]) == ("maxCostUsd", 0.15)
    assert client.get(f"/api/runs/{wid}").json()["spend"]["maxCostUsd"] == 0.15


def test_ops_spend_refuses_a_bad_since(settings: Settings) -> None:
    """`kodo ops spend --since` takes an ISO-8601 time or an age; anything else is an error naming the option."""
    refused = cli(settings, "ops", "spend", "--since", "yesterday")
    assert refused.exit_code == 1 and "--since" in refused.output
    assert json.loads(cli(settings, "ops", "spend", "--since", "2h").output) == []


def test_cancelling_a_run_mid_call_releases_its_reservation(client: TestClient, engine: sa.Engine) -> None:
    """A run cancelled while its agent call is in flight holds nothing afterwards; a failed run neither."""
    wid = start(client, "slow call kodo-fake: sleep=3000", budget={**BUDGET, "maxCostUsd": 1})
    wait_until(lambda: reservations(engine, wid) == {"reserved": 1}, what="the call's hold")
    action = {"actor": "ops", "reason": "stop spending"}
    assert client.post(f"/api/ops/wf/{wid}/cancel", json=action).status_code == 202
    assert reservations(engine, wid) == {"released": 1}
    failing = start(client, "broken call kodo-fake: status=500", budget={**BUDGET, "maxCostUsd": 1})
    done = wait_status(client, failing, TERMINAL)
    assert done["durableStatus"] == "retries_exceeded", done
    assert reservations(engine, failing) == {"released": 1}


def test_a_bad_answer_to_a_budget_gate_is_400_and_writes_nothing(client: TestClient, engine: sa.Engine) -> None:
    """No decision, or a top-up that is not a number > 0 (tokens: whole), is 400; the gate stays open."""
    wid = start(client, f"bad answers {BIG}", budget={**BUDGET, "maxCostUsd": 0.15})
    gate = budget_gate(client, wid)
    url = f"/api/runs/{wid}/gates/{gate['gateKey']}/reply"
    with engine.connect() as conn:
        before = table_counts(conn)
    for payload in (
        {"maxCostUsd": 1},
        {"choice": "yes", "maxCostUsd": -1},
        {"choice": "yes", "maxCostUsd": "lots"},
        {"choice": "yes", "maxCostUsd": True},
        {"choice": "yes", "maxTokens": 1.5},
        {"choice": "yes", "maxTokens": "NaN"},
    ):
        refused = client.post(url, json={"payload": payload, "dedupeKey": "bad", "origin": "manual"})
        assert refused.status_code == 400, (payload, refused.text)
    with engine.connect() as conn:
        assert table_counts(conn) == before
    assert client.get(f"/api/runs/{wid}").json()["nextAction"] == "APPROVE_BUDGET"
