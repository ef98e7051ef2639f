"""kodo.client maps every status kodo answers back onto kodo's error tree (pure, no server)."""

from __future__ import annotations

from typing import Any

import pytest

from kodo.client.calls import error_for, get_run
from kodo.errors import (
    AccessDenied,
    Conflict,
    Gone,
    IdentityDrift,
    InfrastructureError,
    InvalidInput,
    KodoError,
    NotFound,
    PolicyViolation,
)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, {"error": "invalid request", "details": [{"msg": "x"}]}, InvalidInput),
        (400, {"error": "no partition", "details": [], "code": "queue_policy_violation"}, PolicyViolation),
        (413, {"error": "request body larger than 10 bytes"}, InvalidInput),
        (401, {"error": "unauthorized: a valid bearer token is required"}, AccessDenied),
        (403, {"error": "forbidden: this needs role admin (token has viewer)"}, AccessDenied),
        (404, {"error": "run not found"}, NotFound),
        (409, {"error": "drift", "drift": [{"field": "tenant_id", "existing": "a", "incoming": "b"}]}, IdentityDrift),
        (409, {"error": "run is not waiting", "status": "succeeded"}, Conflict),
        (410, {"error": "legacy route disabled"}, Gone),
        (500, {"error": "internal error"}, InfrastructureError),
        (503, None, InfrastructureError),
    ],
)
def test_status_maps_to_the_matching_error(status: int, body: Any, kind: type[KodoError]) -> None:
    """Each status (and body shape) becomes one kodo error, keeping the message, status and body."""
    error = error_for(status, body)
    assert type(error) is kind
    assert error.status_code == status and error.body == body  # type: ignore[attr-defined]
    if isinstance(body, dict):
        assert error.message == body["error"]
    if isinstance(error, Conflict) and not isinstance(error, IdentityDrift):
        assert error.extra == {"status": "succeeded"}


def test_long_poll_waits_are_bounded_like_the_server() -> None:
    """A long-poll asks for at most 30 s per request and reads a little longer than it asks the server to wait."""
    call = get_run("it_x", "end", 500)
    assert call.params == {"until": "end", "timeoutS": 30} and call.timeout_s == 40
    assert get_run("it/x").path == "/api/runs/it%2Fx" and get_run("it_x").timeout_s is None
