"""Replay mode: fixture files when present, else a documented deterministic producer.

The producer's rules (SPEC §5) make the runbooks reproducible:

* plan (CompileST): ``design: ["Design for: <goal>"]``; a goal containing the word ``ask`` (or
  ``constraints.askUser``) adds a ``question``; tests ``test0 … test<N-1>`` for ``workload.steps = N``.
* build (DecideST): a goal containing ``fail me`` emits test command ``FAIL_ME``; otherwise
  ``constraints.testCommand`` or ``echo``. ``constraints.testCommand`` without ``constraints.tests``
  yields no tests, so exactly one task runs the command as is.

Fixtures live in ``<fixtures>/<agent>/<sha256(agent, prompt, schemaHash)>.json``; ``record`` mode writes them.
A fixture may carry the usage of the live call it was taken from in ``<same name>.usage.json``
(``Usage.as_json``): a replayed call reports it, so the ledger shows what the call would have cost, and
kodo charges nothing for it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from kodo.adapters.agent import AgentRequest, AgentResult, Usage
from kodo.identity import sha256_hex

_ASK = re.compile(r"\bask\b", re.IGNORECASE)
DEFAULT_TEST_COMMAND = "echo"


def _plan(context: dict[str, Any]) -> dict[str, Any]:
    intent = context.get("intent", {})
    goal = str(intent.get("goal", ""))
    constraints = intent.get("constraints") or {}
    workload = context.get("workload") or {}
    steps = int(workload.get("steps", 0) or 0)
    tests = constraints.get("tests")
    if isinstance(tests, list) and all(isinstance(t, str) for t in tests):
        planned = list(tests)
    elif isinstance(constraints.get("testCommand"), str):
        planned = []
    else:
        planned = [f"test{i}" for i in range(steps)]
    plan: dict[str, Any] = {
        "goal": goal,
        "design": [f"Design for: {goal}"],
        "files": [],
        "risks": [],
        "tests": planned,
    }
    if _ASK.search(goal) or constraints.get("askUser") is True:
        plan["question"] = f"What should kodo know before working on: {goal}?"
    patch_plan = constraints.get("patchPlan")
    if isinstance(patch_plan, list):
        plan["patchPlan"] = patch_plan
    return plan


def _build(context: dict[str, Any]) -> dict[str, Any]:
    intent = context.get("intent", {})
    goal = str(intent.get("goal", "")).lower()
    constraints = intent.get("constraints") or {}
    plan = context.get("plan") or {}
    if "fail me" in goal:
        command = "FAIL_ME"
    elif isinstance(constraints.get("testCommand"), str) and constraints["testCommand"].strip():
        command = constraints["testCommand"]
    else:
        command = DEFAULT_TEST_COMMAND
    return {"patch": [], "tests": list(plan.get("tests", [])), "test_command": command}


def produce(request: AgentRequest) -> dict[str, Any]:
    """The deterministic producer's answer to a request."""
    return _plan(request.context) if request.agent == "plan" else _build(request.context)


class ReplayAgent:
    """``OC_MODE=replay`` (fixtures, else the producer) and ``record`` (producer, then write the fixture)."""

    def __init__(self, fixtures_dir: Path, *, record: bool = False) -> None:
        self.fixtures_dir = fixtures_dir
        self.record = record
        self.mode = "record" if record else "replay"

    def fixture_path(self, request: AgentRequest) -> Path:
        key = sha256_hex({"agent": request.agent, "prompt": request.prompt, "schemaHash": request.schema_hash})
        return self.fixtures_dir / request.agent / f"{key}.json"

    def structured(self, request: AgentRequest) -> AgentResult:
        started = time.monotonic()
        path = self.fixture_path(request)
        usage_path = path.with_suffix(".usage.json")
        usage = Usage.from_json(json.loads(usage_path.read_text(encoding="utf-8"))) if usage_path.is_file() else None
        if not self.record and path.is_file():
            structured = json.loads(path.read_text(encoding="utf-8"))
            source = "fixture"
        else:
            structured = produce(request)
            source = "producer"
            if self.record:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(structured, indent=2, sort_keys=True), encoding="utf-8")
        return AgentResult(
            structured=structured,
            mode=self.mode,
            duration_ms=int((time.monotonic() - started) * 1000),
            raw={"source": source, "fixture": str(path)},
            usage=usage,
        )
