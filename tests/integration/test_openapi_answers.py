"""The routes kodo.client uses document their answers in the OpenAPI schema, and a golden path's real
answers (successes and errors) validate against what is documented."""

from __future__ import annotations

from typing import Any

import jsonschema
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import wait_status
from kodo.api.deps import ApiContext
from kodo.main import create_app, dbos_client
from kodo.settings import Settings


class Checked:
    """A client whose every answer must be documented for its route and status, and match that schema."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.document = client.get("/openapi.json").json()

    def __call__(self, method: str, route: str, url: str, status: int, **kw: Any) -> Any:
        response = self.client.request(method, url, **kw)
        assert response.status_code == status, (method, url, response.text)
        responses = self.document["paths"][route][method.lower()]["responses"]
        assert str(status) in responses, f"{method} {route} does not document {status}: {sorted(responses)}"
        schema = responses[str(status)]["content"]["application/json"]["schema"]
        validator = jsonschema.Draft202012Validator({**schema, "components": self.document["components"]})
        validator.validate(response.json())
        return response.json()


def test_the_golden_path_answers_what_the_document_says(client: TestClient) -> None:
    """Intent, start (new and replay), header, gates, inbox, diagnosis, approve, recipes, recipe start, errors."""
    check = Checked(client)
    intent = check("POST", "/api/intents", "/api/intents", 201, json={"goal": "typed", "inputs": {}, "constraints": {}})
    check("POST", "/api/intents", "/api/intents", 400, json={"goal": ""})
    start = {"intentId": intent["intentId"], "queuePartitionKey": "typed"}
    run = check("POST", "/api/runs", "/api/runs", 201, json=start)
    check("POST", "/api/runs", "/api/runs", 200, json=start)
    check("POST", "/api/runs", "/api/runs", 409, json={**start, "queuePartitionKey": "other"})
    check("POST", "/api/runs", "/api/runs", 400, json={"intentId": intent["intentId"]})
    wid = run["workflowID"]
    header = "/api/runs/{wid}"
    waiting = check("GET", header, f"/api/runs/{wid}?until=input&timeoutS=30", 200)
    assert waiting["status"] == "WAITING_INPUT"
    check("GET", header, "/api/runs/it_nope", 404)
    check("GET", header, f"/api/runs/{wid}?until=never", 400)
    (gate,) = check("GET", "/api/runs/{wid}/gates", f"/api/runs/{wid}/gates", 200)
    check("GET", "/api/hitl/inbox", "/api/hitl/inbox", 200)
    check("GET", "/api/hitl/inbox", "/api/hitl/inbox?limit=0", 400)
    check("GET", "/api/runs/{wid}/diagnosis", f"/api/runs/{wid}/diagnosis", 200)
    check("GET", "/api/runs/{wid}/diagnosis", "/api/runs/it_nope/diagnosis", 404)
    reply = "/api/runs/{wid}/gates/{gate_key}/reply"
    body = {"payload": {"choice": "yes"}, "dedupeKey": "k", "origin": "manual"}
    check("POST", reply, f"/api/runs/{wid}/gates/{gate['gateKey']}/reply", 200, json=body)
    check("POST", reply, f"/api/runs/{wid}/gates/{gate['gateKey']}/reply", 409, json={**body, "payload": {}})
    check("POST", reply, f"/api/runs/{wid}/gates/{gate['gateKey']}/reply", 400, json={"payload": {}})
    wait_status(client, wid, {"SUCCESS"})
    approve = "/api/runs/{wid}/approve-plan"
    check("POST", approve, "/api/runs/it_nope/approve-plan", 404, json={"approvedBy": "me"})
    recipes = check("GET", "/api/recipes", "/api/recipes", 200)
    assert any(recipe["id"] == "compile-default" for recipe in recipes)
    recipe_start = {"recipeRef": {"id": "compile-default", "v": "v1"}, "formData": {"goal": "typed recipe"}}
    started = check("POST", "/api/run", "/api/run", 201, json={**recipe_start, "opts": {"queuePartitionKey": "t"}})
    check("POST", "/api/run", "/api/run", 200, json={**recipe_start, "opts": {"queuePartitionKey": "t"}})
    check("POST", "/api/run", "/api/run", 400, json={"recipeRef": {"id": "compile-default"}})
    again = check("GET", header, f"/api/runs/{started['workflowID']}?until=input&timeoutS=30", 200)
    accepted = check("POST", approve, f"/api/runs/{again['workflowID']}/approve-plan", 202, json={"approvedBy": "me"})
    assert accepted["accepted"] is True


SUCCESS_MEDIA = {"application/json", "text/event-stream", "text/x-diff", "text/plain", "image/svg+xml"}


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, ops in document["paths"].items() for method, op in ops.items()]


def test_every_route_documents_its_success_schema_and_its_errors(settings: Settings, engine: sa.Engine) -> None:
    """Every operation of /openapi.json declares a typed success (a schema per media type) and the error
    answers it can give, each with the error body's schema; none declares FastAPI's 422."""
    client = dbos_client(settings, engine)
    try:
        app = create_app(ApiContext(settings=settings, engine=engine, client=client, role="api"))
        document = TestClient(app, base_url="http://127.0.0.1").get("/openapi.json").json()
    finally:
        client.destroy()
    error_ref = {"$ref": "#/components/schemas/ErrorAnswer"}
    operations = _operations(document)
    assert len(operations) >= 50
    for method, path, operation in operations:
        where = f"{method} {path}"
        responses = operation["responses"]
        assert "422" not in responses, where
        successes = {code: answer for code, answer in responses.items() if code.startswith("2")}
        assert successes, f"{where} documents no success"
        for code, answer in successes.items():
            content = answer.get("content") or {}
            assert content and set(content) <= SUCCESS_MEDIA, f"{where} {code}: {sorted(content)}"
            for media_type, described in content.items():
                assert described.get("schema"), f"{where} {code} {media_type} has no schema"
        expected = {"400", "503"} | ({"401", "403"} if path != "/healthz" else set())
        if method in {"POST", "PUT", "PATCH", "DELETE"}:
            expected |= {"413", "415"}
        if "{" in path:
            expected.add("404")
        assert expected <= set(responses), f"{where} lacks {sorted(expected - set(responses))}"
        for code, answer in responses.items():
            if code[0] in "45":
                assert answer["content"]["application/json"]["schema"] == error_ref, f"{where} {code}"
