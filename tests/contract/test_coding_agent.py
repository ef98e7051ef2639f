"""Contract suite for the CodingAgent port (SPEC §5, §8): every implementation must pass it.

Add an implementation by appending to ``IMPLEMENTATIONS``. Capabilities say which parts of the
contract apply: every agent answers with schema-valid JSON; ``deterministic`` agents also follow the
documented producer rules; ``fixtures`` agents read/write fixture files.

The live clients run here against local servers, with no environment variable needed:
``live-openai`` is ``OpenAICompatibleAgent`` over loopback HTTP to kodo's fake model server, and
``live-opencode`` is ``OpenCodeAgent`` driving the real ``opencode serve`` binary (pinned 1.18.x)
configured to use that fake model (it skips with a reason when the binary is absent). Both answer
by the producer rules (the fake applies them to the request's context block), so they are
``deterministic`` too. ``live-env`` runs the live agent the environment configures (a real model)
only with ``KODO_LIVE_AGENT=1``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kodo.adapters.agent import BUILD_SCHEMA, PLAN_SCHEMA, AgentRequest, AgentResult, CodingAgent
from kodo.adapters.agent.fake_model import MODEL_ID
from kodo.adapters.agent.replay import ReplayAgent
from live_servers import PASSWORD

# --- implementations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentImpl:
    name: str
    build: Callable[[Path, pytest.FixtureRequest], CodingAgent]
    deterministic: bool = False
    fixtures: bool = False


def _live(tmp: Path, **env: str) -> CodingAgent:
    from kodo.main import build_agent
    from kodo.settings import load_settings

    return build_agent(load_settings({"OC_MODE": "live", "OC_STRICT_MODE": "1", "KODO_HOME": str(tmp), **env}))


def _env_agent(tmp: Path, request: pytest.FixtureRequest) -> CodingAgent:
    from kodo.main import build_agent
    from kodo.settings import load_settings

    return build_agent(load_settings({**os.environ, "OC_MODE": "live", "KODO_HOME": str(tmp)}))


def _openai_agent(tmp: Path, request: pytest.FixtureRequest) -> CodingAgent:
    fake = request.getfixturevalue("fake_model")
    return _live(tmp, OC_PROVIDER="openai", OPENAI_BASE_URL=fake.base_url, OPENAI_MODEL=MODEL_ID)


def _opencode_agent(tmp: Path, request: pytest.FixtureRequest) -> CodingAgent:
    server = request.getfixturevalue("opencode_server")
    return _live(
        tmp,
        OC_PROVIDER="opencode",
        OC_BASE_URL=server.base_url,
        OPENCODE_SERVER_PASSWORD=PASSWORD,
        OC_TIMEOUT_MS="60000",
    )


REPLAY = AgentImpl("replay", lambda tmp, _: ReplayAgent(tmp / "fixtures"), deterministic=True, fixtures=True)
RECORD = AgentImpl(
    "record", lambda tmp, _: ReplayAgent(tmp / "fixtures", record=True), deterministic=True, fixtures=True
)
LIVE_OPENAI = AgentImpl("live-openai", _openai_agent, deterministic=True)
LIVE_OPENCODE = AgentImpl("live-opencode", _opencode_agent, deterministic=True)
LIVE_ENV = AgentImpl("live-env", _env_agent)

IMPLEMENTATIONS = [
    pytest.param(REPLAY, id="replay"),
    pytest.param(RECORD, id="record"),
    pytest.param(LIVE_OPENAI, id="live-openai"),
    pytest.param(LIVE_OPENCODE, id="live-opencode"),
    pytest.param(
        LIVE_ENV,
        id="live-env",
        marks=pytest.mark.skipif(os.environ.get("KODO_LIVE_AGENT") != "1", reason="set KODO_LIVE_AGENT=1"),
    ),
]
DETERMINISTIC = [p for p in IMPLEMENTATIONS if p.values[0].deterministic]


@pytest.fixture(params=IMPLEMENTATIONS)
def agent(request: pytest.FixtureRequest, tmp_path: Path) -> CodingAgent:
    impl: AgentImpl = request.param
    return impl.build(tmp_path, request)


@pytest.fixture(params=DETERMINISTIC)
def deterministic_agent(request: pytest.FixtureRequest, tmp_path: Path) -> CodingAgent:
    impl: AgentImpl = request.param
    return impl.build(tmp_path, request)


# --- a minimal JSON-schema check (the subset PLAN_SCHEMA and BUILD_SCHEMA use) ------------------


def schema_errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: not an object"]
        errors = [f"{path}.{key}: missing" for key in schema.get("required", []) if key not in value]
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            errors += [f"{path}.{key}: not allowed" for key in value if key not in props]
        for key, item in value.items():
            if key in props:
                errors += schema_errors(item, props[key], f"{path}.{key}")
        return errors
    if kind == "array":
        if not isinstance(value, list):
            return [f"{path}: not an array"]
        errors = []
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        for i, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), f"{path}[{i}]")
        return errors
    if kind == "string":
        if not isinstance(value, str):
            return [f"{path}: not a string"]
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return [f"{path}: longer than {schema['maxLength']}"]
    return []


def test_schema_check_catches_violations() -> None:
    """The schema check used below really rejects missing, extra and mistyped fields."""
    assert schema_errors({}, PLAN_SCHEMA)
    good_plan = {"goal": "g", "design": [], "files": [], "risks": [], "tests": []}
    assert schema_errors(good_plan, PLAN_SCHEMA) == []
    assert schema_errors({**good_plan, "extra": 1}, PLAN_SCHEMA)
    assert schema_errors({**good_plan, "tests": "test0"}, PLAN_SCHEMA)
    assert schema_errors({"patch": [{"path": "a"}], "tests": [], "test_command": "x"}, BUILD_SCHEMA)
    assert schema_errors({"patch": [], "tests": [], "test_command": 1}, BUILD_SCHEMA)


# --- requests -----------------------------------------------------------------------------------


def intent(goal: str = "add a feature", **constraints: Any) -> dict[str, Any]:
    return {"goal": goal, "inputs": {}, "constraints": constraints}


def plan_request(
    goal: str = "add a feature", *, steps: int | None = 2, attempt: int = 1, run_id: str = "run_1", **constraints: Any
) -> AgentRequest:
    the_intent = intent(goal, **constraints)
    return AgentRequest(
        run_id=run_id,
        step_id="CompileST",
        attempt=attempt,
        agent="plan",
        prompt=f"Goal: {goal}\nConstraints: {json.dumps(constraints, sort_keys=True)}\nReturn ONLY JSON per schema.",
        schema=PLAN_SCHEMA,
        context={
            "intent": the_intent,
            "workload": None if steps is None else {"concurrency": 1, "steps": steps, "sandboxMinutes": 1},
        },
    )


def build_request(
    goal: str = "add a feature", *, plan: dict[str, Any] | None = None, attempt: int = 1, **constraints: Any
) -> AgentRequest:
    plan = plan if plan is not None else {"design": [], "files": [], "risks": [], "tests": ["test0", "test1"]}
    return AgentRequest(
        run_id="run_1",
        step_id="DecideST",
        attempt=attempt,
        agent="build",
        prompt=f"Approved Plan: {plan}\nGoal: {goal}\nConstraints: {json.dumps(constraints, sort_keys=True)}",
        schema=BUILD_SCHEMA,
        context={"intent": intent(goal, **constraints), "plan": plan},
    )


# --- the contract: every implementation ---------------------------------------------------------


def test_plan_answer_matches_plan_schema(agent: CodingAgent) -> None:
    """A plan answer has goal/design/files/risks/tests and nothing outside PLAN_SCHEMA."""
    result = agent.structured(plan_request())
    assert isinstance(result, AgentResult)
    assert schema_errors(result.structured, PLAN_SCHEMA) == []


def test_build_answer_matches_build_schema(agent: CodingAgent) -> None:
    """A build answer has patch/tests/test_command and nothing outside BUILD_SCHEMA."""
    result = agent.structured(build_request())
    assert schema_errors(result.structured, BUILD_SCHEMA) == []
    assert result.structured["test_command"].strip()


def test_result_reports_the_agent_mode(agent: CodingAgent) -> None:
    """The result says which mode answered (it is recorded in the agent-call ledger)."""
    result = agent.structured(plan_request())
    assert result.mode == agent.mode
    assert result.duration_ms >= 0


def test_answer_is_never_a_silent_fallback(agent: CodingAgent) -> None:
    """A live agent's answer really came from its server: no producer fallback in strict mode."""
    result = agent.structured(plan_request("check the source"))
    assert result.raw is None or "fallback" not in result.raw


# --- deterministic implementations: the producer rules of SPEC §5 -------------------------------


def test_same_request_same_answer(deterministic_agent: CodingAgent) -> None:
    """Replaying the same request gives the same structured answer."""
    for request in (plan_request("make it fast", steps=3), build_request("make it fast")):
        first = deterministic_agent.structured(request).structured
        second = deterministic_agent.structured(request).structured
        assert first == second


def test_plan_design_names_the_goal(deterministic_agent: CodingAgent) -> None:
    """The producer's plan echoes the goal and designs "Design for: <goal>"."""
    plan = deterministic_agent.structured(plan_request("ship the widget")).structured
    assert plan["goal"] == "ship the widget"
    assert plan["design"] == ["Design for: ship the widget"]


@pytest.mark.parametrize("goal", ["please ask me first", "Ask about the API", "build it, then ASK"])
def test_goal_with_word_ask_adds_a_question(deterministic_agent: CodingAgent, goal: str) -> None:
    """A goal containing the word "ask" makes the plan carry a question."""
    plan = deterministic_agent.structured(plan_request(goal)).structured
    assert isinstance(plan.get("question"), str) and plan["question"]


@pytest.mark.parametrize("goal", ["run the task", "basket weaving", "masks everywhere", "add a feature"])
def test_goal_without_word_ask_has_no_question(deterministic_agent: CodingAgent, goal: str) -> None:
    """ "ask" inside another word (task, basket) does not add a question."""
    plan = deterministic_agent.structured(plan_request(goal)).structured
    assert "question" not in plan


def test_ask_user_constraint_adds_a_question(deterministic_agent: CodingAgent) -> None:
    """constraints.askUser = true asks a question even without the word in the goal."""
    plan = deterministic_agent.structured(plan_request("add a feature", askUser=True)).structured
    assert "question" in plan


@pytest.mark.parametrize("steps", [0, 1, 3, 5])
def test_workload_steps_give_numbered_tests(deterministic_agent: CodingAgent, steps: int) -> None:
    """workload.steps = N plans tests test0 … test<N-1>."""
    plan = deterministic_agent.structured(plan_request(steps=steps)).structured
    assert plan["tests"] == [f"test{i}" for i in range(steps)]


def test_missing_workload_plans_no_tests(deterministic_agent: CodingAgent) -> None:
    """Without a workload the plan has no tests."""
    plan = deterministic_agent.structured(plan_request(steps=None)).structured
    assert plan["tests"] == []


def test_test_command_constraint_plans_no_tests(deterministic_agent: CodingAgent) -> None:
    """constraints.testCommand without constraints.tests plans no tests (one task runs the command)."""
    plan = deterministic_agent.structured(plan_request(steps=3, testCommand="pytest -q")).structured
    assert plan["tests"] == []


def test_explicit_tests_constraint_wins(deterministic_agent: CodingAgent) -> None:
    """constraints.tests (a list) is the plan's test list, even with testCommand."""
    plan = deterministic_agent.structured(plan_request(steps=3, tests=["a", "b"], testCommand="pytest -q")).structured
    assert plan["tests"] == ["a", "b"]


@pytest.mark.parametrize("goal", ["please fail me now", "FAIL ME", "fail me"])
def test_fail_me_goal_emits_fail_me_command(deterministic_agent: CodingAgent, goal: str) -> None:
    """A goal containing "fail me" makes the build emit test command FAIL_ME."""
    build = deterministic_agent.structured(build_request(goal)).structured
    assert build["test_command"] == "FAIL_ME"


def test_fail_me_beats_test_command(deterministic_agent: CodingAgent) -> None:
    """ "fail me" wins over constraints.testCommand."""
    build = deterministic_agent.structured(build_request("fail me", testCommand="pytest")).structured
    assert build["test_command"] == "FAIL_ME"


def test_test_command_constraint_is_the_build_command(deterministic_agent: CodingAgent) -> None:
    """constraints.testCommand becomes the build's test command, with no tests when the plan had none."""
    plan = deterministic_agent.structured(plan_request(steps=4, testCommand="uv run pytest -q")).structured
    build = deterministic_agent.structured(build_request(plan=plan, testCommand="uv run pytest -q")).structured
    assert build["test_command"] == "uv run pytest -q"
    assert build["tests"] == []


def test_default_build_command_and_tests_follow_the_plan(deterministic_agent: CodingAgent) -> None:
    """Without constraints the build runs "echo" over the approved plan's tests."""
    plan = deterministic_agent.structured(plan_request(steps=3)).structured
    build = deterministic_agent.structured(build_request(plan=plan)).structured
    assert build["test_command"] == "echo"
    assert build["tests"] == ["test0", "test1", "test2"]
    assert build["patch"] == []


def test_blank_test_command_falls_back_to_echo(deterministic_agent: CodingAgent) -> None:
    """A whitespace-only testCommand is ignored."""
    build = deterministic_agent.structured(build_request(testCommand="   ")).structured
    assert build["test_command"] == "echo"


# --- fixtures: record then replay ---------------------------------------------------------------


def test_record_writes_a_fixture_that_replay_reads_back(tmp_path: Path) -> None:
    """Record mode writes the answer to a fixture file; replay mode then serves that file's content."""
    fixtures = tmp_path / "fixtures"
    request = plan_request("record me", steps=2)
    recorder = ReplayAgent(fixtures, record=True)
    recorded = recorder.structured(request)
    path = recorder.fixture_path(request)
    assert path.is_file()
    assert path.is_relative_to(fixtures / "plan")
    assert json.loads(path.read_text(encoding="utf-8")) == recorded.structured

    edited = {**recorded.structured, "tests": ["from-fixture"], "design": ["edited by hand"]}
    path.write_text(json.dumps(edited), encoding="utf-8")

    replayed = ReplayAgent(fixtures).structured(request)
    assert replayed.structured == edited
    assert replayed.mode == "replay"
    assert replayed.raw is not None and replayed.raw["source"] == "fixture"


def test_replay_without_fixture_uses_the_producer_and_writes_nothing(tmp_path: Path) -> None:
    """Replay mode falls back to the producer and never creates fixture files."""
    fixtures = tmp_path / "fixtures"
    result = ReplayAgent(fixtures).structured(plan_request(steps=1))
    assert result.structured["tests"] == ["test0"]
    assert result.raw is not None and result.raw["source"] == "producer"
    assert not fixtures.exists() or not any(fixtures.rglob("*.json"))


def test_record_mode_refreshes_an_existing_fixture(tmp_path: Path) -> None:
    """Record mode answers from the producer and overwrites a stale fixture."""
    fixtures = tmp_path / "fixtures"
    request = plan_request(steps=2)
    recorder = ReplayAgent(fixtures, record=True)
    path = recorder.fixture_path(request)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"stale": True}), encoding="utf-8")
    result = recorder.structured(request)
    assert result.structured["tests"] == ["test0", "test1"]
    assert json.loads(path.read_text(encoding="utf-8")) == result.structured


def test_fixture_is_shared_across_runs_and_attempts(tmp_path: Path) -> None:
    """The fixture key is (agent, prompt, schema): another run or attempt of the same prompt reuses it."""
    agent = ReplayAgent(tmp_path)
    base = plan_request()
    assert agent.fixture_path(base) == agent.fixture_path(plan_request(attempt=2, run_id="run_other"))
    assert agent.fixture_path(base) != agent.fixture_path(plan_request("other goal"))
    assert agent.fixture_path(base).parent.name == "plan"
    assert agent.fixture_path(build_request()).parent.name == "build"


# --- the request's op key -----------------------------------------------------------------------


def test_op_key_matches_the_spec_formula() -> None:
    """op_key = sha256("<runId>:<stepId>:<attempt>:<schemaHash>:<promptHash>")."""
    request = plan_request()
    schema_hash = hashlib.sha256(
        json.dumps(PLAN_SCHEMA, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    prompt_hash = hashlib.sha256(request.prompt.encode()).hexdigest()
    text = f"run_1:CompileST:1:{schema_hash}:{prompt_hash}"
    assert request.schema_hash == schema_hash
    assert request.op_key == hashlib.sha256(text.encode()).hexdigest()


def test_op_key_changes_with_attempt() -> None:
    """Each attempt of a step is a new op key (a retry prompts again), stable within an attempt."""
    assert plan_request(attempt=1).op_key == plan_request(attempt=1).op_key
    assert plan_request(attempt=1).op_key != plan_request(attempt=2).op_key


def test_op_key_changes_with_run_prompt_and_schema() -> None:
    """Run, prompt and schema are all part of the op key."""
    base = plan_request()
    assert plan_request(run_id="run_2").op_key != base.op_key
    assert plan_request("another goal").op_key != base.op_key
    other_schema = AgentRequest(
        run_id=base.run_id,
        step_id=base.step_id,
        attempt=base.attempt,
        agent=base.agent,
        prompt=base.prompt,
        schema=BUILD_SCHEMA,
        context=base.context,
    )
    assert other_schema.op_key != base.op_key
