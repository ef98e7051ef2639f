"""Request bodies at the edge (SPEC §4 Fail closed): strict schemas, 400 never 422."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import ValidationError

from kodo.api import errors
from kodo.api.schemas import (
    ApiRunBody,
    BudgetBody,
    IntentBody,
    PlanApprovalBody,
    RunRequestBody,
    WorkloadBody,
    parse_body,
)

INTENT = {"goal": "build it", "inputs": {}, "constraints": {}}
BUDGET = {"maxFanout": 1, "maxSBXMinutes": 1, "maxArtifactsMB": 1, "maxRetriesPerStep": 0, "maxWallClockMS": 1}


def _invalid(model: type[Any], data: Any) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return caught.value.errors()


# --- models -------------------------------------------------------------------------------------


def test_intent_body_accepts_a_minimal_intent() -> None:
    """goal + inputs + constraints is a complete intent; connectors is optional."""
    body = IntentBody.model_validate(INTENT)
    assert body.goal == "build it"
    assert body.connectors is None
    assert IntentBody.model_validate({**INTENT, "connectors": ["github"]}).connectors == ["github"]


@pytest.mark.parametrize("missing", ["goal", "inputs", "constraints"])
def test_intent_body_requires_each_field(missing: str) -> None:
    """Each of goal, inputs and constraints is required."""
    data = {k: v for k, v in INTENT.items() if k != missing}
    assert any(e["loc"] == (missing,) for e in _invalid(IntentBody, data))


def test_intent_body_rejects_unknown_fields() -> None:
    """An unknown field is a schema violation (additionalProperties: false)."""
    errs = _invalid(IntentBody, {**INTENT, "extra": 1})
    assert errs[0]["type"] == "extra_forbidden"


def test_intent_body_rejects_empty_goal() -> None:
    """goal must be a non-empty string."""
    _invalid(IntentBody, {**INTENT, "goal": ""})


@pytest.mark.parametrize(
    "patch",
    [{"goal": 5}, {"inputs": []}, {"constraints": "x"}, {"connectors": "github"}, {"connectors": [1]}],
)
def test_intent_body_rejects_wrong_types(patch: dict[str, Any]) -> None:
    """Wrong JSON types are rejected, not coerced."""
    _invalid(IntentBody, {**INTENT, **patch})


def test_run_request_body_all_optional() -> None:
    """An empty run request is valid: every field has a default."""
    body = RunRequestBody.model_validate({})
    assert body.priority is None and body.workload is None and body.autoApprove is None


def test_run_request_body_accepts_a_full_request() -> None:
    """Every documented run-request field is accepted with its JSON type."""
    body = RunRequestBody.model_validate(
        {
            "traceId": "t",
            "queueName": "intentQ",
            "lane": "batch",
            "priority": 1000,
            "deduplicationID": "d",
            "timeoutMS": 1000,
            "recipeName": "compile-default",
            "recipeVersion": 1,
            "workload": {"concurrency": 1, "steps": 2, "sandboxMinutes": 3},
            "tenantId": "tenant",
            "taskKey": "k",
            "queuePartitionKey": "p",
            "budget": BUDGET,
            "autoApprove": True,
        }
    )
    assert body.workload is not None and body.workload.steps == 2
    assert body.budget is not None and body.budget.maxFanout == 1


@pytest.mark.parametrize(
    "patch",
    [
        {"priority": 0},
        {"priority": -1},
        {"priority": 2_147_483_648},
        {"priority": "1"},
        {"priority": 1.0},
        {"priority": True},
        {"timeoutMS": 0},
        {"queueName": "otherQ"},
        {"lane": "fast"},
        {"tenantId": ""},
        {"taskKey": ""},
        {"queuePartitionKey": ""},
        {"autoApprove": "true"},
        {"recipeVersion": "1"},
        {"unknown": 1},
    ],
)
def test_run_request_body_rejects_bad_fields(patch: dict[str, Any]) -> None:
    """Out-of-range, mistyped, empty or unknown run-request fields are rejected."""
    _invalid(RunRequestBody, patch)


@pytest.mark.parametrize("missing", ["concurrency", "steps", "sandboxMinutes"])
def test_workload_requires_all_three_ints(missing: str) -> None:
    """A workload needs concurrency, steps and sandboxMinutes together."""
    data = {k: v for k, v in {"concurrency": 1, "steps": 2, "sandboxMinutes": 3}.items() if k != missing}
    assert any(e["loc"] == (missing,) for e in _invalid(WorkloadBody, data))


@pytest.mark.parametrize("patch", [{"steps": "2"}, {"steps": 2.0}, {"steps": -1}, {"concurrency": None}, {"other": 1}])
def test_workload_rejects_non_ints(patch: dict[str, Any]) -> None:
    """Workload fields are non-negative JSON integers, never strings or floats."""
    _invalid(WorkloadBody, {"concurrency": 1, "steps": 2, "sandboxMinutes": 3, **patch})


def test_workload_inside_run_request_is_strict() -> None:
    """A string step count inside a run request is rejected at workload.steps."""
    errs = _invalid(RunRequestBody, {"workload": {"concurrency": 1, "steps": "2", "sandboxMinutes": 3}})
    assert any(e["loc"] == ("workload", "steps") for e in errs)


def test_budget_accepts_all_five_fields() -> None:
    """A budget is exactly five integer limits."""
    assert BudgetBody.model_validate(BUDGET).maxRetriesPerStep == 0


@pytest.mark.parametrize("missing", sorted(BUDGET))
def test_budget_requires_each_field(missing: str) -> None:
    """Every budget field is required."""
    _invalid(BudgetBody, {k: v for k, v in BUDGET.items() if k != missing})


@pytest.mark.parametrize(
    "patch",
    [
        {"maxFanout": 0},
        {"maxSBXMinutes": 0},
        {"maxArtifactsMB": 0},
        {"maxRetriesPerStep": -1},
        {"maxWallClockMS": 0},
        {"maxFanout": "1"},
        {"maxExtra": 1},
    ],
)
def test_budget_rejects_bad_limits(patch: dict[str, Any]) -> None:
    """Budget limits are positive (retries non-negative) integers and nothing else."""
    _invalid(BudgetBody, {**BUDGET, **patch})


def test_api_run_body_requires_intent_id() -> None:
    """POST /api/runs needs a non-empty intentId on top of the run request."""
    _invalid(ApiRunBody, {})
    _invalid(ApiRunBody, {"intentId": ""})
    assert ApiRunBody.model_validate({"intentId": "it_1", "lane": "batch"}).intentId == "it_1"


def test_plan_approval_body() -> None:
    """approvedBy is required and non-empty; notes optional; nothing else allowed."""
    assert PlanApprovalBody.model_validate({"approvedBy": "me"}).notes is None
    _invalid(PlanApprovalBody, {})
    _invalid(PlanApprovalBody, {"approvedBy": ""})
    _invalid(PlanApprovalBody, {"approvedBy": "me", "extra": True})


# --- parse_body over HTTP -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.post("/intent")
    async def intent(request: Request) -> dict[str, Any]:
        return (await parse_body(request, IntentBody)).model_dump()

    @app.post("/run")
    async def run(request: Request) -> dict[str, Any]:
        return (await parse_body(request, RunRequestBody)).model_dump(exclude_none=True)

    return TestClient(app)


def test_parse_body_valid_intent(client: TestClient) -> None:
    """A valid JSON body is parsed and validated into the model."""
    response = client.post("/intent", json=INTENT)
    assert response.status_code == 200
    assert response.json()["goal"] == "build it"


@pytest.mark.parametrize("raw", [b"{", b"{'goal': 1}", b"not json", b"\xff\xfe", b'{"goal": "x",}'])
def test_malformed_json_is_400_invalid_json(client: TestClient, raw: bytes) -> None:
    """Unparsable bodies are 400 {"error": "invalid json", "details": [...]}, never 422."""
    response = client.post("/intent", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid json"
    assert isinstance(body["details"], list) and body["details"]


@pytest.mark.parametrize("raw", [b"[]", b'[{"goal": "x"}]', b"null", b"1", b'"text"'])
def test_non_object_json_is_400(client: TestClient, raw: bytes) -> None:
    """A JSON body that is not an object (array, null, scalar) is a 400 schema error."""
    response = client.post("/intent", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    body = response.json()
    assert "IntentBody" in body["error"]
    assert isinstance(body["details"], list)


@pytest.mark.parametrize("raw", [b"", b"   ", b"\n"])
def test_empty_body_is_parsed_as_empty_object(client: TestClient, raw: bytes) -> None:
    """An empty body is {}: valid for an all-optional model, a schema error for an intent."""
    ok = client.post("/run", content=raw)
    assert ok.status_code == 200
    assert ok.json() == {}
    bad = client.post("/intent", content=raw)
    assert bad.status_code == 400
    body = bad.json()
    assert body["error"].startswith("invalid IntentBody")
    assert {tuple(d["loc"]) for d in body["details"]} >= {("goal",), ("inputs",), ("constraints",)}


def test_schema_violation_is_400_with_details(client: TestClient) -> None:
    """A schema violation names the model and the field in error and details."""
    response = client.post("/run", json={"priority": 0, "workload": {"concurrency": 1, "steps": "2"}})
    assert response.status_code == 400
    body = response.json()
    assert body["error"].startswith("invalid RunRequestBody: ")
    locs = {tuple(d["loc"]) for d in body["details"]}
    assert ("priority",) in locs
    assert ("workload", "steps") in locs
    assert ("workload", "sandboxMinutes") in locs
    assert all({"loc", "msg", "type"} <= set(d) for d in body["details"])


def test_unknown_field_is_400(client: TestClient) -> None:
    """An unknown top-level field is a 400 naming the field."""
    response = client.post("/intent", json={**INTENT, "surprise": True})
    assert response.status_code == 400
    assert "surprise" in response.json()["error"]


# FAILS TODAY — src bug: parse_body uses json.loads, which accepts the non-JSON literals NaN,
# Infinity and -Infinity. SPEC §4 says malformed JSON is a 400 that writes nothing; today the body
# passes, canonical() then hashes the invalid text '{"n":NaN}', and Postgres jsonb rejects it later.
@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_number_literals_are_invalid_json(client: TestClient, literal: bytes) -> None:
    """NaN/Infinity are not JSON: a body using them is 400 invalid json, like any malformed body."""
    raw = b'{"goal": "x", "inputs": {"n": ' + literal + b'}, "constraints": {}}'
    response = client.post("/intent", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid json"
