"""kodo.api.errors: the one mapping from kodo's error tree to HTTP (SPEC §4 Fail closed)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kodo.api import errors
from kodo.errors import (
    ConfigurationError,
    Conflict,
    Gone,
    IdentityDrift,
    InfrastructureError,
    InvalidInput,
    KodoError,
    NotFound,
    PolicyViolation,
    StepFailure,
)


def test_invalid_input_is_400_with_details() -> None:
    """A schema error is 400 {"error", "details"}."""
    details = [{"loc": ["goal"], "msg": "required"}]
    assert errors.body_for(InvalidInput("invalid IntentBody: goal", details)) == (
        400,
        {"error": "invalid IntentBody: goal", "details": details},
    )


def test_invalid_input_without_details_has_empty_list() -> None:
    """details is always a list, even when empty."""
    assert errors.body_for(InvalidInput("invalid json")) == (400, {"error": "invalid json", "details": []})


def test_policy_violation_is_400_with_code() -> None:
    """A queue/budget policy violation is 400 with code queue_policy_violation."""
    status, body = errors.body_for(PolicyViolation("parent intent workflow must use intentQ (got sbxQ)"))
    assert status == 400
    assert body["error"] == "parent intent workflow must use intentQ (got sbxQ)"
    assert body["code"] == "queue_policy_violation"


def test_policy_violation_keeps_a_custom_code() -> None:
    """A policy violation with its own code reports that code."""
    status, body = errors.body_for(PolicyViolation("x", code="dedupe_or_priority_required"))
    assert (status, body["code"]) == (400, "dedupe_or_priority_required")


def test_not_found_is_404() -> None:
    """A missing thing is 404 {"error"}."""
    assert errors.body_for(NotFound("run not found: x")) == (404, {"error": "run not found: x"})


def test_conflict_is_409_with_extra_fields() -> None:
    """An illegal state is 409 and carries any extra fields the raiser attached."""
    assert errors.body_for(Conflict("run is terminal")) == (409, {"error": "run is terminal"})
    status, body = errors.body_for(Conflict("gate closed", gateKey="g-1"))
    assert status == 409
    assert body == {"error": "gate closed", "gateKey": "g-1"}


def test_identity_drift_is_409_with_drift_list() -> None:
    """Same id, different identity fields → 409 with drift [{field, existing, incoming}]."""
    drift = [{"field": "tenant_id", "existing": "a", "incoming": "b"}]
    status, body = errors.body_for(IdentityDrift("identity drift", drift))
    assert status == 409
    assert body["error"] == "identity drift"
    assert body["drift"] == drift


def test_gone_is_410() -> None:
    """A disabled legacy route is 410."""
    assert errors.body_for(Gone("legacy route disabled; use /api/runs")) == (
        410,
        {"error": "legacy route disabled; use /api/runs"},
    )


@pytest.mark.parametrize(
    "error",
    [
        InfrastructureError("postgres down at 10.0.0.1"),
        StepFailure("BOOT_FAIL", "sandbox failed"),
        ConfigurationError("PORT: bad"),
        KodoError("whatever"),
    ],
)
def test_everything_else_is_500_internal_error(error: KodoError) -> None:
    """Other kodo errors are 500 {"error": "internal error"} and leak no message."""
    assert errors.body_for(error) == (500, {"error": "internal error"})


# --- the installed handlers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.get("/raise/notfound")
    def not_found() -> None:
        raise NotFound("artifact not found")

    @app.get("/raise/drift")
    def drift() -> None:
        raise IdentityDrift("drift", [{"field": "budget", "existing": None, "incoming": {"maxFanout": 1}}])

    @app.get("/raise/infra")
    def infra() -> None:
        raise InfrastructureError("secret dsn postgresql://u:p@h/db")

    @app.get("/raise/bug")
    def bug() -> None:
        raise RuntimeError("boom with secrets")

    @app.get("/typed")
    def typed(n: int) -> dict[str, int]:
        return {"n": n}

    return TestClient(app, raise_server_exceptions=False)


def test_installed_handler_maps_kodo_errors(client: TestClient) -> None:
    """Raised kodo errors reach the client as their mapped status and JSON body."""
    response = client.get("/raise/notfound")
    assert response.status_code == 404
    assert response.json() == {"error": "artifact not found"}
    response = client.get("/raise/drift")
    assert response.status_code == 409
    assert response.json()["drift"] == [{"field": "budget", "existing": None, "incoming": {"maxFanout": 1}}]


def test_infrastructure_error_is_opaque_500(client: TestClient) -> None:
    """Infrastructure failures are 500 internal error without the message (no DSN leaks)."""
    response = client.get("/raise/infra")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}


def test_unexpected_exception_is_opaque_500(client: TestClient) -> None:
    """Any other exception is 500 {"error": "internal error"}."""
    response = client.get("/raise/bug")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}


def test_request_validation_is_400_never_422(client: TestClient) -> None:
    """FastAPI's own parameter validation is turned into a 400 with details."""
    response = client.get("/typed", params={"n": "abc"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid request"
    assert body["details"] and body["details"][0]["loc"] == ["query", "n"]


def test_unknown_route_is_404_not_found(client: TestClient) -> None:
    """An unknown route is 404 {"error": "not found"}."""
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}
