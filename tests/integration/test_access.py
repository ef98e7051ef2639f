"""Access: bearer tokens, the role matrix, tenant scoping (cross-tenant reads are 404s), audit actors, the
console's login cookie and the request body limit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import make_settings, table_counts, wait_status
from kodo.settings import Settings

JSON = "application/json"

TOKENS = {
    "viewer": ("viewer-acme-token-0001", "vera", "acme", "viewer"),
    "approver": ("approver-acme-token-01", "anna", "acme", "approver"),
    "operator": ("operator-acme-token-01", "otto", "acme", "operator"),
    "admin": ("admin-acme-token-00001", "ada", "acme", "admin"),
    "beta": ("approver-beta-token-01", "bob", "beta", "operator"),
    "global": ("global-operator-token1", "ops-bot", "*", "operator"),
}
ROLES = ("viewer", "approver", "operator", "admin")


def _auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who][0]}"}


class _As:
    """A getter for wait_status that sends a token."""

    def __init__(self, client: TestClient, who: str = "global") -> None:
        self.client, self.who = client, who

    def get(self, url: str) -> Any:
        return self.client.get(url, headers=_auth(self.who))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    spec = {"tokens": [{"token": t, "subject": s, "tenant": n, "role": r} for t, s, n, r in TOKENS.values()]}
    return make_settings(database_url, tmp_path / "home", KODO_API_TOKENS=json.dumps(spec))


def _start(client: TestClient, partition: str = "acme", who: str = "approver", auto: bool = False) -> str:
    body = {"goal": "tenant run", "inputs": {}, "constraints": {}}
    intent = client.post("/api/intents", json=body, headers=_auth(who)).json()["intentId"]
    started = client.post(
        "/api/runs",
        json={"intentId": intent, "queuePartitionKey": partition, "autoApprove": auto},
        headers=_auth(who),
    )
    assert started.status_code == 201, started.text
    return str(started.json()["workflowID"])


def test_every_route_but_healthz_needs_a_valid_token(client: TestClient) -> None:
    """No token or an unknown one is a 401 everywhere but /healthz; a browser is sent to /login."""
    assert client.get("/healthz").status_code == 200
    for method, path in [
        ("GET", "/api/runs/nope"),
        ("GET", "/api/recipes"),
        ("POST", "/api/intents"),
        ("GET", "/api/ops/wf"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/api/hitl/inbox"),
        ("GET", "/no/such/route"),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": "Basic x"}):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.json() == {"error": "unauthorized: a valid bearer token is required"}
    page = client.get("/inbox", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Finbox"
    assert client.get("/openapi.json", headers=_auth("viewer")).status_code == 200


def test_each_role_reaches_exactly_its_routes(client: TestClient, engine: sa.Engine) -> None:
    """viewer reads, approver starts and approves, operator runs ops mutations, admin imports recipes:
    a lower role is a 403 that writes nothing."""
    wid = _start(client)
    wait_status(_As(client), wid, {"WAITING_INPUT"})
    needs: list[tuple[str, str, str, dict[str, Any] | None]] = [
        ("viewer", "GET", f"/api/runs/{wid}", None),
        ("approver", "POST", "/api/intents", {"goal": "g", "inputs": {}, "constraints": {}}),
        ("approver", "POST", f"/api/runs/{wid}/approve-plan", {"approvedBy": "x"}),
        ("operator", "POST", f"/api/ops/wf/{wid}/cancel", {"actor": "a", "reason": "r"}),
        ("admin", "POST", "/api/recipes/import", {"bad": "bundle"}),
    ]
    for needed, method, path, body in needs:
        for role in ROLES:
            with engine.connect() as conn:
                before = table_counts(conn)
            response = client.request(method, path, json=body, headers=_auth(role))
            if ROLES.index(role) < ROLES.index(needed):
                assert response.status_code == 403, (role, path, response.text)
                assert response.json()["error"] == f"forbidden: this needs role {needed} (token has {role})"
                with engine.connect() as conn:
                    assert table_counts(conn) == before, (role, path)
            else:
                assert response.status_code not in {401, 403}, (role, path, response.text)
                if method == "POST" and path.endswith("/cancel"):
                    break  # cancelled once is enough
        if path.endswith("/approve-plan"):
            # The approved run writes its remaining steps now; let it finish, or the "writes nothing"
            # counts of the next routes would see its rows land.
            wait_status(_As(client), wid, {"SUCCESS"})


def test_a_tenant_never_sees_another_tenants_runs(client: TestClient, engine: sa.Engine) -> None:
    """Every read or action on another tenant's run answers as for a missing run (404, or [] where an
    unknown run has none); lists leave those runs out; a start in a foreign partition is a 403."""
    wid = _start(client)
    header = wait_status(_As(client), wid, {"WAITING_INPUT"})
    run_id = header["runId"]
    gate = client.get(f"/api/runs/{wid}/gates", headers=_auth("approver")).json()[0]["gateKey"]
    uri = client.get(f"/api/runs/{wid}/steps", headers=_auth("viewer")).json()[0]["artifactRefs"][0]["id"]
    missing = {"error": "run not found"}
    for key in (wid, run_id):
        for path, status, body in [
            (f"/api/runs/{key}", 404, missing),
            (f"/api/runs/{key}/steps", 404, missing),
            (f"/api/runs/{key}/executions", 404, missing),
            (f"/runs/{key}", 404, missing),
            (f"/api/runs/{key}/gates", 200, []),
            (f"/api/runs/{key}/interactions", 200, []),
            (f"/api/runs/{key}/proofs", 200, []),
            (f"/api/runs/{key}/repro", 404, missing),
            (f"/api/runs/{key}/gates/{gate}", 404, missing),
            (f"/api/ops/wf/{key}", 404, {"error": f"workflow not found: {key}"}),
            (f"/api/runs/{key}/diagnosis", 404, {"error": f"workflow not found: {key}"}),
            (f"/api/runs/{key}/events", 404, missing),
            (f"/ui/runs/{key}/panel", 404, missing),
        ]:
            response = client.get(path, headers=_auth("beta"))
            assert (response.status_code, response.json()) == (status, body), path
    assert client.get(f"/api/artifacts/{uri}", headers=_auth("beta")).json() == {"error": "artifact not found"}
    assert client.get(f"/api/runs/{wid}", headers=_auth("global")).status_code == 200
    with engine.connect() as conn:
        before = table_counts(conn)
    reply = {"payload": {"choice": "yes"}, "dedupeKey": "k1", "origin": "manual"}
    hitl = {**reply, "workflowId": wid, "gateKey": gate, "topic": f"human:{gate}"}
    for method, path, body in [
        ("POST", f"/api/runs/{wid}/gates/{gate}/reply", reply),
        ("POST", "/api/events/hitl", hitl),
        ("POST", f"/api/runs/{wid}/approve-plan", {"approvedBy": "bob"}),
        ("POST", f"/api/ops/wf/{wid}/cancel", {"actor": "bob", "reason": "mine now"}),
        ("POST", f"/runs/{run_id}/retry", None),
    ]:
        assert client.request(method, path, json=body, headers=_auth("beta")).status_code == 404, path
    with engine.connect() as conn:
        assert table_counts(conn) == before
    assert client.get("/api/hitl/inbox", headers=_auth("beta")).json() == []
    assert [r["workflowID"] for r in client.get("/api/hitl/inbox", headers=_auth("viewer")).json()] == [wid]
    assert client.get("/api/ops/wf", headers=_auth("beta")).json() == []
    assert wid in {r["workflowID"] for r in client.get("/api/ops/wf", headers=_auth("viewer")).json()}
    intent = client.post("/api/intents", json={"goal": "g", "inputs": {}, "constraints": {}}, headers=_auth("beta"))
    foreign = {"intentId": intent.json()["intentId"], "queuePartitionKey": "acme"}
    assert client.post("/api/runs", json=foreign, headers=_auth("beta")).status_code == 403
    stolen = {"intentId": wid, "queuePartitionKey": "beta"}
    assert client.post("/api/runs", json=stolen, headers=_auth("beta")).json() == {"error": f"Intent not found: {wid}"}
    for view in ("/api/ops/queue-depth", "/api/ops/executors", "/metrics"):
        assert client.get(view, headers=_auth("viewer")).status_code == 403
        assert client.get(view, headers=_auth("global")).status_code == 200


def test_the_audit_names_the_tokens_subject(client: TestClient, engine: sa.Engine) -> None:
    """An ops mutation and a plan approval record the token's subject, not the actor the body claims."""
    wid = _start(client)
    wait_status(_As(client), wid, {"WAITING_INPUT"})
    approved = client.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "mallory"}, headers=_auth("approver"))
    assert approved.status_code == 202
    wait_status(_As(client), wid, {"SUCCESS"})
    other = _start(client)
    wait_status(_As(client), other, {"WAITING_INPUT"})
    body = {"actor": "mallory", "reason": "stop it"}
    assert client.post(f"/api/ops/wf/{other}/cancel", json=body, headers=_auth("operator")).status_code == 202
    audit = client.get(f"/api/ops/wf/{other}", headers=_auth("viewer")).json()["audit"]
    assert [(a["op"], a["actor"], a["reason"]) for a in audit] == [("cancel", "otto", "stop it")]
    with engine.connect() as conn:
        approvers = conn.execute(sa.text("SELECT approved_by FROM app.plan_approvals")).scalars().all()
    assert approvers == ["anna"]


def test_the_console_signs_in_with_a_cookie(client: TestClient) -> None:
    """POST /login with a valid token sets an HttpOnly SameSite=Strict cookie that pages and the API accept."""
    wid = _start(client)
    bad = client.post("/login", data={"token": "nope", "next": "/inbox"}, follow_redirects=False)
    assert bad.status_code == 401 and "not valid" in bad.text
    good = client.post("/login", data={"token": TOKENS["viewer"][0], "next": "/inbox"}, follow_redirects=False)
    assert good.status_code == 303 and good.headers["location"] == "/inbox"
    cookie = good.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get(f"/api/runs/{wid}").status_code == 200
    assert "Run <code>" in client.get(f"/runs/{wid}/view").text
    assert client.get("/logout", follow_redirects=False).status_code == 303
    client.cookies.clear()
    assert client.get(f"/api/runs/{wid}").status_code == 401


def test_oversized_bodies_are_refused_before_anything_runs(client: TestClient, engine: sa.Engine) -> None:
    """A body over KODO_MAX_BODY_BYTES (1 MiB) is a 413 JSON error, declared or streamed, and writes nothing."""
    with engine.connect() as conn:
        before = table_counts(conn)
    big = json.dumps({"goal": "x" * (1024 * 1024), "inputs": {}, "constraints": {}})
    response = client.post("/api/intents", content=big, headers={**_auth("approver"), "content-type": JSON})
    assert response.status_code == 413
    assert response.json() == {"error": "request body larger than 1048576 bytes"}
    chunks = iter([big.encode()[:600_000], big.encode()[600_000:]])
    streamed = client.post("/api/intents", content=chunks, headers={"content-type": JSON})
    assert streamed.status_code == 413
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_console_pages_are_scoped_like_the_api(client: TestClient) -> None:
    """A foreign run's page looks exactly like a missing run's; home and inbox list only the tenant's runs;
    the ops console needs a tenant-* token; recipes are global."""
    wid = _start(client)
    wait_status(_As(client), wid, {"WAITING_INPUT"})
    foreign = client.get(f"/runs/{wid}/view", headers=_auth("beta"))
    unknown = client.get("/runs/it_0000000000000000/view", headers=_auth("beta"))
    assert foreign.status_code == unknown.status_code == 200
    assert foreign.text.replace(wid, "X") == unknown.text.replace("it_0000000000000000", "X")
    assert client.get(f"/?wid={wid}", headers=_auth("beta")).text.replace(wid, "X") == unknown.text.replace(
        "it_0000000000000000", "X"
    )
    assert wid in client.get("/", headers=_auth("viewer")).text
    assert wid not in client.get("/", headers=_auth("beta")).text
    assert wid in client.get("/inbox", headers=_auth("viewer")).text
    assert wid not in client.get("/inbox", headers=_auth("beta")).text
    assert client.get("/ops", headers=_auth("viewer")).status_code == 403
    assert client.get("/ops", headers=_auth("global")).status_code == 200
    assert client.get("/recipes", headers=_auth("beta")).status_code == 200
