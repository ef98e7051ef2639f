"""``kodo mcp`` as a real subprocess (stdio, and --http), driven by the MCP SDK's client, against a real
``kodo up`` with bearer tokens: the assistant starts a run, follows it to the plan gate, approves it and
sees SUCCESS."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from helpers import wait_until
from mcp_scenarios import APPROVER, TOKENS, VIEWER, call, run_to_success, start_refused
from processes import KodoProcess, clean_env, free_port


def _stdio(base: str, token: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "kodo", "mcp"], env={"KODO_URL": base, "KODO_TOKEN": token}
    )


def test_an_assistant_over_stdio_takes_a_run_to_success(spawn: Callable[..., KodoProcess]) -> None:
    """Through `kodo mcp` on stdio: start a recipe run, wait for the plan gate, approve, see SUCCESS."""
    up = spawn("up", KODO_API_TOKENS=TOKENS)
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]

    async def scenario() -> None:
        async with Client(_stdio(base, VIEWER)) as watcher:
            names = {tool.name for tool in (await watcher.list_tools()).tools}
            assert "answer_gate" not in names and "start_recipe_run" not in names and "get_run" in names
        async with Client(_stdio(base, APPROVER)) as assistant:
            await run_to_success(assistant, "stdio assistant", "acme")
            assert "AccessDenied" in await start_refused(assistant, "beta")  # another tenant's partition

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
                assert (await call(watcher, "list_inbox")) == {"result": []}

        asyncio.run(scenario())
    finally:
        server.stop()
