"""The MCP tools over streamable HTTP (kodo.mcp_server.http_app) behind kodo's own bearer tokens, driven by
the MCP SDK's client through a real loopback HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import httpx2
import pytest
import sqlalchemy as sa
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from helpers import make_settings
from kodo.main import Worker
from kodo.mcp_server import http_app
from kodo.settings import Settings
from kodo_server import live_api, serving
from mcp_scenarios import APPROVER, TOKENS, VIEWER, call, run_to_success


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "home", KODO_API_TOKENS=TOKENS)


@pytest.fixture
def mcp_url(settings: Settings, engine: sa.Engine, worker: Worker) -> Iterator[str]:
    with live_api(settings, engine) as kodo_url, serving(http_app(kodo_url), lifespan="on") as url:
        yield f"{url}/mcp"


def _client(url: str, token: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120)
    return Client(streamable_http_client(url, http_client=http))


def test_no_valid_token_is_a_401_before_any_mcp_message(mcp_url: str) -> None:
    """Without a token, or with one kodo does not know, the MCP endpoint answers 401."""
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    for headers in ({}, {"Authorization": "Bearer not-a-kodo-token-at-all"}):
        response = httpx.post(mcp_url, json=message, headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


def test_each_call_runs_with_the_callers_token(mcp_url: str) -> None:
    """An approver takes a run to SUCCESS over HTTP; a viewer is offered the read-only tools only, reads the run,
    and cannot call a write tool."""

    async def scenario() -> None:
        async with _client(mcp_url, APPROVER) as assistant:
            wid = await run_to_success(assistant, "http assistant", "acme")
        async with _client(mcp_url, VIEWER) as watcher:
            names = {tool.name for tool in (await watcher.list_tools()).tools}
            assert names == {"get_run", "wait_for_run", "run_diagnosis", "run_diff", "list_inbox", "list_recipes"}
            assert (await call(watcher, "get_run", workflow_id=wid))["status"] == "SUCCESS"
            refused = await watcher.call_tool(
                "start_recipe_run",
                {
                    "recipe_id": "compile-default",
                    "version": "v1",
                    "form_data": {"goal": "y"},
                    "queue_partition_key": "acme",
                },
            )
            assert refused.is_error and "start_recipe_run" in refused.content[0].text  # type: ignore[union-attr]
        async with _client(mcp_url, APPROVER) as assistant:
            names = {tool.name for tool in (await assistant.list_tools()).tools}
            assert {"start_recipe_run", "answer_gate"} <= names

    asyncio.run(scenario())
