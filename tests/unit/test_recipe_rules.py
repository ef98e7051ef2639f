"""Recipe rules without a database: instantiation, the schema subset, spec validation, the shipped pack,
eval checks, budget arithmetic and fixture verdicts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from kodo.api.schemas import BudgetBody, RunStartBody
from kodo.errors import InvalidInput
from kodo.identity import sha256_hex
from kodo.models import Artifact
from kodo.store.migrate import pack_files
from kodo.store.recipe_versions import version_order
from kodo.workflows import budgets, evals, schema_check
from kodo.workflows.fixtures import verdict
from kodo.workflows.recipe_spec import RecipeBundle, RecipeSpec
from kodo.workflows.recipes import instantiate, render, validate_spec

SPEC: dict[str, Any] = {
    "formSchema": {
        "type": "object",
        "additionalProperties": False,
        "required": ["goal"],
        "properties": {
            "goal": {"type": "string", "minLength": 1},
            "topic": {"type": "string", "default": "alpha"},
            "tests": {"type": "array", "items": {"type": "string"}, "default": []},
        },
    },
    "intentTmpl": {
        "goal": "Goal: {{formData.goal}} ({{ formData.topic }})",
        "inputs": {"topic": "{{formData.topic}}", "n": "{{formData.tests}}"},
        "constraints": {"tests": "{{formData.tests}}"},
    },
}


def spec(**changes: Any) -> dict[str, Any]:
    return {**SPEC, **changes}


def test_instantiate_fills_defaults_and_keeps_types() -> None:
    """Defaults fill missing keys; exact {{path}} keeps the JSON type, embedded ones interpolate text."""
    intent = instantiate(spec(), {"goal": "ship", "tests": ["a", "b"]})
    assert intent == {
        "goal": "Goal: ship (alpha)",
        "inputs": {"topic": "alpha", "n": ["a", "b"]},
        "constraints": {"tests": ["a", "b"]},
    }


@pytest.mark.parametrize(
    ("form", "fragment"),
    [
        ({}, "formData.goal: is required"),
        ({"goal": ""}, "shorter than 1"),
        ({"goal": "x", "colour": "red"}, "formData.colour: unknown field"),
        ({"goal": 7}, "expected string"),
        ({"goal": "x", "tests": "a"}, "expected array"),
    ],
)
def test_instantiate_refuses_bad_form_data(form: dict[str, Any], fragment: str) -> None:
    """Form data that breaks the form schema is an InvalidInput naming the problem."""
    with pytest.raises(InvalidInput) as caught:
        instantiate(spec(), form)
    assert fragment in caught.value.message


def test_unknown_template_key_is_refused() -> None:
    """A template naming a key the form data lacks is 'missing template key: formData.x'."""
    template = {"goal": "{{formData.nope}}", "inputs": {}, "constraints": {}}
    loose = spec(formSchema={"type": "object"}, intentTmpl=template)
    with pytest.raises(InvalidInput, match=r"missing template key: formData\.nope"):
        instantiate(loose, {})
    with pytest.raises(InvalidInput, match="unknown template root"):
        render("{{env.HOME}}", {"formData": {}})


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ({"goal": "", "inputs": {}, "constraints": {}}, "goal must be a non-empty string"),
        ({"goal": "x", "inputs": [], "constraints": {}}, "inputs must be an object"),
        ({"goal": "x", "inputs": {}, "constraints": {}, "extra": 1}, "unknown intent field"),
        ({"goal": "x", "inputs": {}}, "constraints must be an object"),
        ({"goal": "x", "inputs": {}, "constraints": {}, "connectors": [1]}, "connectors must be a list"),
    ],
)
def test_template_must_render_a_valid_intent(template: dict[str, Any], fragment: str) -> None:
    """The rendered template is validated as an Intent."""
    with pytest.raises(InvalidInput, match="invalid Intent") as caught:
        instantiate(spec(formSchema={"type": "object"}, intentTmpl=template), {})
    assert fragment in caught.value.message


def test_schema_subset_checks_and_refuses_unknown_keywords() -> None:
    """The schema subset validates nested data and refuses keywords it does not implement."""
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}, "s": {"pattern": "^a"}}}
    assert schema_check.validate({"n": 2, "s": "abc"}, schema) == []
    assert schema_check.validate({"n": True}, schema) == ["$.n: expected integer, got bool"]
    assert schema_check.validate({"n": 0, "s": "b"}, schema) == ["$.n: below the minimum 1", "$.s: does not match '^a'"]
    assert schema_check.unsupported_keywords({"type": "object", "oneOf": []}) == ["$: unsupported keyword 'oneOf'"]
    assert schema_check.unsupported_keywords({"type": "thing"}) == ["$: unknown type 'thing'"]


def _spec_json(**changes: Any) -> dict[str, Any]:
    base = json.loads(json.dumps(next(iter(pack_files()))[1]["versions"][0]))
    return {**base, **changes}


def test_recipe_spec_is_strict() -> None:
    """Unknown fields, bad ids, unknown check kinds and bad regexes are refused by the model."""
    RecipeSpec.model_validate(_spec_json())
    for bad in (
        _spec_json(extra=1),
        _spec_json(id="Has Space"),
        _spec_json(v="v@1"),
        _spec_json(eval=[{"kind": "vibes", "id": "x"}]),
        _spec_json(eval=[{"kind": "regex", "id": "x", "artifact": "a", "re": "("}]),
        _spec_json(limits={"maxSteps": 0, "maxFanout": 1, "maxSbxMin": 1, "maxTokens": 1}),
        _spec_json(wfEntry="Other"),
    ):
        with pytest.raises(ValidationError):
            RecipeSpec.model_validate(bad)
    with pytest.raises(ValidationError):
        RecipeBundle.model_validate({"id": "b", "versions": []})


def test_validate_spec_checks_fixtures_and_ids() -> None:
    """A fixture that does not instantiate, or duplicate check ids, make the version invalid."""
    broken = _spec_json(fixtures=[{"id": "f", "formData": {}}])
    with pytest.raises(InvalidInput, match="fixture 'f'"):
        validate_spec(RecipeSpec.model_validate(broken))
    check = {"kind": "file_exists", "id": "dup", "glob": "x"}
    with pytest.raises(InvalidInput, match="duplicate eval check id 'dup'"):
        validate_spec(RecipeSpec.model_validate(_spec_json(eval=[check, check])))


def test_shipped_pack_is_valid_normalized_and_stable_ready() -> None:
    """Every shipped version validates, is already in normalized form, and has ≥ 1 eval and ≥ 1 fixture."""
    bundles = pack_files()
    assert bundles
    ids = set()
    for _name, bundle in bundles:
        parsed = RecipeBundle.model_validate(bundle)
        for raw, version in zip(bundle["versions"], parsed.versions, strict=True):
            validate_spec(version)
            assert version.normalized() == raw, version.id
            assert version.eval and version.fixtures
            ids.add(f"{version.id}@{version.v}")
    assert "compile-default@v1" in ids and len(ids) >= 3
    compile_default = RecipeSpec.model_validate(_spec_json())
    assert compile_default.formSchema["required"] == ["goal"]


def test_version_order_is_natural() -> None:
    """v2 sorts before v10."""
    assert sorted(["v10", "v2", "v1"], key=version_order) == ["v1", "v2", "v10"]


def test_budget_accepts_both_wall_clock_spellings() -> None:
    """maxWallClockMs (seed 000) and maxWallClockMS both parse to maxWallClockMS; both at once is refused."""
    base = {"maxFanout": 1, "maxSBXMinutes": 1, "maxArtifactsMB": 1, "maxRetriesPerStep": 0}
    assert BudgetBody.model_validate({**base, "maxWallClockMs": 5}).model_dump()["maxWallClockMS"] == 5
    assert BudgetBody.model_validate({**base, "maxWallClockMS": 5}).model_dump()["maxWallClockMS"] == 5
    with pytest.raises(ValidationError):
        BudgetBody.model_validate({**base, "maxWallClockMS": 5, "maxWallClockMs": 5})


def test_run_start_body_is_strict() -> None:
    """recipeRef and formData are required; opts refuses recipeName/recipeVersion and unknown keys."""
    good = {"recipeRef": {"id": "a", "v": "v1"}, "formData": {}}
    RunStartBody.model_validate({**good, "opts": {"allowDraft": True, "lane": "batch"}})
    for bad in (
        {"formData": {}},
        {"recipeRef": {"id": "a", "v": "v1"}},
        {**good, "opts": {"recipeName": "x"}},
        {**good, "opts": {"recipeVersion": 1}},
        {**good, "recipeRef": {"id": "a", "v": "v1", "x": 1}},
        {**good, "formData": []},
    ):
        with pytest.raises(ValidationError):
            RunStartBody.model_validate(bad)


def _artifact(uri: str, inline: Any, attempt: int = 1) -> Artifact:
    return Artifact(
        run_id="r",
        step_id="ExecuteST",
        task_key="t",
        idx=0,
        attempt=attempt,
        kind="stdout",
        uri=uri,
        inline=inline,
        sha256=sha256_hex(inline),
        created_at=datetime.now(UTC),
    )


ROOT = "artifact://run/r/step/ExecuteST/task"
A1, B2 = f"{ROOT}/t1/stdout.log", f"{ROOT}/t2/*"
MADE = [
    _artifact(f"{ROOT}/t1/stdout.log", {"text": "OK: echo a\nline 2\n"}),
    _artifact(f"{ROOT}/t2/stdout.log", {"text": "OK: echo b\n"}),
    _artifact(f"{ROOT}/t1/files/out.json", {"text": '{"rows": [1, 2]}'}),
    _artifact(f"{ROOT}/t1/raw.json", {"json": [1, 2, 3]}),
]


@pytest.mark.parametrize(
    ("check", "passed"),
    [
        ({"kind": "file_exists", "id": "c", "glob": "artifact://run/*/step/ExecuteST/task/*/stdout.log"}, True),
        ({"kind": "file_exists", "id": "c", "glob": "artifact://run/*/step/ExecuteST/task/*/nope.log"}, False),
        ({"kind": "file_exists", "id": "c", "glob": "src/*.py"}, True),
        ({"kind": "jsonschema", "id": "c", "artifact": f"{ROOT}/*/files/out.json", "schema": {"type": "object"}}, True),
        ({"kind": "jsonschema", "id": "c", "artifact": f"{ROOT}/*/files/out.json", "schema": {"type": "array"}}, False),
        ({"kind": "jsonschema", "id": "c", "artifact": f"{ROOT}/*/stdout.log", "schema": {}}, False),
        ({"kind": "rowcount_gte", "id": "c", "artifact": f"{ROOT}/*/stdout.log", "n": 3}, True),
        ({"kind": "rowcount_gte", "id": "c", "artifact": f"{ROOT}/*/stdout.log", "n": 4}, False),
        ({"kind": "rowcount_gte", "id": "c", "artifact": f"{ROOT}/*/raw.json", "n": 3}, True),
        ({"kind": "regex", "id": "c", "artifact": f"{ROOT}/*/stdout.log", "re": "^OK: "}, True),
        ({"kind": "regex", "id": "c", "artifact": f"{ROOT}/*/stdout.log", "re": "line 2"}, False),
        ({"kind": "diff_le", "id": "c", "artifactA": A1, "artifactB": B2, "max": 3}, True),
        ({"kind": "diff_le", "id": "c", "artifactA": A1, "artifactB": B2, "max": 2}, False),
    ],
)
def test_eval_checks(check: dict[str, Any], passed: bool, tmp_path: Path) -> None:
    """Each eval kind passes and fails on the right artifacts (globs over URIs, or workspace paths)."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("x = 1\n")
    ok, reason, payload = evals.evaluate(check, MADE, tmp_path)
    assert ok is passed, (reason, payload)
    json.dumps(payload)


def test_eval_uses_the_newest_attempt() -> None:
    """When an artifact has several attempts, checks read the newest one."""
    made = [_artifact(f"{ROOT}/t/stdout.log", {"text": "bad"}), _artifact(f"{ROOT}/t/stdout.log", {"text": "OK"}, 2)]
    assert evals.evaluate({"kind": "regex", "id": "c", "artifact": f"{ROOT}/*", "re": "OK"}, made, Path("."))[0]


def test_budget_usage_and_first_violation() -> None:
    """Completion usage counts minutes, MB and retries; the first exceeded budget (in a fixed order) wins."""
    results = [
        {"metrics": {"wallMs": 61_000}, "stdout": "x" * 10, "stderr": "", "attempt": 3},
        {"metrics": {"wallMs": 5}, "stdout": "", "stderr": "", "attempt": 1},
    ]
    usage = budgets.completion_usage(results)
    assert usage == {"maxSBXMinutes": 2, "maxArtifactsMB": 1, "maxRetriesPerStep": 2}
    budget = {"maxFanout": 5, "maxSBXMinutes": 1, "maxArtifactsMB": 1, "maxRetriesPerStep": 1, "maxWallClockMS": 10}
    assert budgets.first_violation(budget, {**usage, "maxWallClockMS": 99}) == ("maxSBXMinutes", 2, 1)
    assert budgets.first_violation(budget, {"maxFanout": 5, "maxWallClockMS": 10}) is None
    artifact = budgets.budget_artifact("run_x", 1, "fanout", "maxFanout", 7, 5)
    assert artifact.step_id == "BUDGET" and artifact.task_key == "maxFanout" and artifact.idx == 0
    assert artifact.inline["metric"] == "maxFanout" and artifact.inline["outcome"] == "blocked"
    assert artifact.inline["reason"] == "budget:maxFanout: observed 7 > limit 5 (runtime)"


@pytest.mark.parametrize(
    ("trials", "expected"),
    [
        ([{"status": "succeeded", "evals": {"a": True}}] * 2, "pass"),
        ([{"status": "retries_exceeded", "evals": {}}] * 2, "fail"),
        ([{"status": "succeeded", "evals": {"a": False}}] * 2, "fail"),
        ([{"status": "succeeded", "evals": {"a": True}}, {"status": "succeeded", "evals": {"a": False}}], "flaky"),
        ([{"status": "succeeded", "evals": {}}, {"status": "retries_exceeded", "evals": {}}], "flaky"),
        ([{"status": "succeeded", "evals": {}}, {"status": "running", "evals": {}}], "timeout"),
    ],
)
def test_fixture_verdicts(trials: list[dict[str, Any]], expected: str) -> None:
    """Trials that agree on success pass, agree otherwise fail, disagree are flaky, unfinished time out."""
    assert verdict(trials) == expected
