"""The webhook and whoami routes document their answers in the OpenAPI schema, and answer what they document."""

from __future__ import annotations

from typing import Any

import jsonschema
from fastapi.testclient import TestClient

from helpers import wait_status, wait_until
from webhook_receiver import receiver


def _validator(document: dict[str, Any], path: str, method: str, status: int) -> jsonschema.Draft202012Validator:
    responses = document["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} does not document {status}: {sorted(responses)}"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    return jsonschema.Draft202012Validator({**schema, "components": document["components"]})


def check(
    client: TestClient, document: dict[str, Any], method: str, path: str, url: str, status: int, **kw: Any
) -> Any:
    response = client.request(method, url, **kw)
    assert response.status_code == status, (method, url, response.text)
    _validator(document, path, method.lower(), status).validate(response.json())
    return response.json()


def test_every_webhook_route_answers_its_documented_schema(client: TestClient) -> None:
    """Success and error answers of /api/webhooks…, /api/whoami validate against their OpenAPI responses."""
    document = client.get("/openapi.json").json()
    with receiver(failures=1) as hook:
        created = check(
            client, document, "POST", "/api/webhooks", "/api/webhooks", 201,
            json={"url": hook.url, "events": ["run.succeeded"]},
        )  # fmt: skip
        check(client, document, "POST", "/api/webhooks", "/api/webhooks", 400, json={"url": "http://10.0.0.1/"})
        check(client, document, "GET", "/api/webhooks", "/api/webhooks", 200)
        intent = client.post("/api/intents", json={"goal": "schema", "inputs": {}, "constraints": {}}).json()
        started = client.post(
            "/api/runs", json={"intentId": intent["intentId"], "queuePartitionKey": "schema", "autoApprove": True}
        )
        wait_status(client, started.json()["workflowID"], {"SUCCESS"})
        wait_until(lambda: client.get("/api/webhooks/deliveries?state=delivered").json(), what="delivered")
        listed = check(client, document, "GET", "/api/webhooks/deliveries", "/api/webhooks/deliveries", 200)
        one = "/api/webhooks/deliveries/{delivery_id}"
        detail = check(client, document, "GET", one, f"/api/webhooks/deliveries/{listed[0]['id']}", 200)
        assert [t["status"] for t in detail["tries"]] == [500, 204]
        check(client, document, "GET", one, "/api/webhooks/deliveries/whd_nope", 404)
        check(client, document, "GET", "/api/webhooks/deliveries", "/api/webhooks/deliveries?limit=0", 400)
        again = "/api/webhooks/deliveries/{delivery_id}/redeliver"
        check(client, document, "POST", again, f"/api/webhooks/deliveries/{listed[0]['id']}/redeliver", 202)
        check(client, document, "POST", again, "/api/webhooks/deliveries/whd_nope/redeliver", 404)
        gone = "/api/webhooks/{subscription_id}"
        check(client, document, "DELETE", gone, f"/api/webhooks/{created['id']}", 200)
        check(client, document, "DELETE", gone, f"/api/webhooks/{created['id']}", 404)
    check(client, document, "GET", "/api/whoami", "/api/whoami", 200)
