"""``kodo mcp`` as a real subprocess (stdio, and --http), driven by the MCP SDK's client, against a real
``kodo up`` with bearer tokens: the assistant starts a run, follows it to the plan gate, approves it and
sees SUCCESS."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from helpers import wait_until
from processes import KodoProcess, clean_env, free_port

APPROVER = "approver-token-mcp-0001"
VIEWER = "viewer-token-mcp-000001"
TOKENS = json.dumps(
    {
        "tokens": [
            {"token": APPROVER, "subject": "assistant", "tenant": "acme", "role": "approver"},
            {"token": VIEWER, "subject": "watcher", "tenant": "acme", "role": "viewer"},
        ]
    }
)


def _stdio(base: str, token: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "kodo", "mcp"], env={"KODO_URL": base, "KODO_TOKEN": token}
    )


async def _call(client: Client, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result.structured_content


def test_an_assistant_over_stdio_takes_a_run_to_success(spawn: Callable[..., KodoProcess]) -> None:
    """Through `kodo mcp` on stdio: start a recipe run, wait for the plan gate, approve, see SUCCESS."""
    up = spawn("up", KODO_API_TOKENS=TOKENS)
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]

    async def scenario() -> None:
        async with Client(_stdio(base, VIEWER)) as watcher:
            names = {tool.name for tool in (await watcher.list_tools()).tools}
            assert "answer_gate" not in names and "start_recipe_run" not in names and "get_run" in names
        async with Client(_stdio(base, APPROVER)) as assistant:
            started = await _call(
                assistant,
                "start_recipe_run",
                recipe_id="compile-default",
                version="v1",
                form_data={"goal": "stdio assistant"},
                queue_partition_key="acme",
            )
            wid = started["workflowId"]
            waiting = await _call(assistant, "wait_for_run", workflow_id=wid, until="input", timeout_s=60)
            assert waiting["nextAction"] == "APPROVE_PLAN"
            await _call(assistant, "answer_gate", workflow_id=wid, answer={"choice": "yes", "rationale": "lgtm"})
            done = await _call(assistant, "wait_for_run", workflow_id=wid, until="end", timeout_s=60)
            assert done["status"] == "SUCCESS"
            elsewhere = await assistant.call_tool(
                "start_recipe_run",
                {
                    "recipe_id": "compile-default",
                    "version": "v1",
                    "form_data": {"goal": "x"},
                    "queue_partition_key": "beta",
                },
            )
            assert elsewhere.is_error and "AccessDenied" in elsewhere.content[0].text  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_kodo_mcp_http_serves_behind_kodos_tokens(spawn: Callable[..., KodoProcess], tmp_path: Path) -> None:
    """`kodo mcp --http PORT`: a request without a token is 401; a viewer's token is offered and uses the
    read-only tools only."""
    up = spawn("up", KODO_API_TOKENS=TOKENS)
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    port = free_port()
    server = KodoProcess(["mcp", "--http", str(port)], clean_env(KODO_URL=base), tmp_path / "mcp-http.log")
    server.start()
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}

        def refused() -> bool:
            try:
                return httpx.post(url, json=message).status_code == 401
            except httpx.HTTPError:
                return False

        wait_until(refused, what="kodo mcp --http listening and refusing anonymous requests")

        async def scenario() -> None:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {VIEWER}"}, timeout=60)
            async with Client(streamable_http_client(url, http_client=http)) as watcher:
                names = {tool.name for tool in (await watcher.list_tools()).tools}
                assert {"get_run", "list_inbox"} <= names and not {"answer_gate", "start_recipe_run"} & names
                assert (await _call(watcher, "list_inbox")) == {"result": []}

        asyncio.run(scenario())
    finally:
        server.stop()
