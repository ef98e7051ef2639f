"""The MCP server (kodo.mcp_server) driven by the MCP SDK's own client, in process, against a live kodo."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from mcp import Client

from kodo.client import AsyncKodoClient
from kodo.main import Worker
from kodo.mcp_server import build_server
from kodo.settings import Settings
from kodo_server import live_api
from mcp_scenarios import call


@pytest.fixture
def base_url(settings: Settings, engine: sa.Engine, worker: Worker) -> Iterator[str]:
    with live_api(settings, engine) as url:
        yield url


def test_an_assistant_starts_follows_approves_and_sees_success(base_url: str) -> None:
    """start_recipe_run → wait_for_run(input) → list_inbox → answer_gate yes → wait_for_run(end) = SUCCESS."""

    async def scenario() -> None:
        async with AsyncKodoClient(base_url) as kodo, Client(build_server(kodo, "admin")) as assistant:
            tools = {tool.name: tool for tool in (await assistant.list_tools()).tools}
            assert set(tools) == {
                "get_run", "wait_for_run", "run_diagnosis", "run_diff", "list_inbox", "list_recipes",
                "start_recipe_run", "answer_gate",
            }  # fmt: skip
            assert tools["start_recipe_run"].input_schema["required"] == [
                "recipe_id", "version", "form_data", "queue_partition_key",
            ]  # fmt: skip
            recipes = await call(assistant, "list_recipes")
            assert "compile-default" in {recipe["recipeId"] for recipe in recipes["result"]}
            started = await call(
                assistant,
                "start_recipe_run",
                recipe_id="compile-default",
                version="v1",
                form_data={"goal": "assistant run"},
                queue_partition_key="assistant",
            )
            wid = started["workflowId"]
            waiting = await call(assistant, "wait_for_run", workflow_id=wid, until="input", timeout_s=60)
            assert (waiting["status"], waiting["nextAction"]) == ("WAITING_INPUT", "APPROVE_PLAN")
            inbox = (await call(assistant, "list_inbox"))["result"]
            assert [entry["workflowId"] for entry in inbox] == [wid]
            why = await call(assistant, "run_diagnosis", workflow_id=wid)
            assert why["code"] and why["reason"]
            change = await call(assistant, "run_diff", workflow_id=wid)  # no repository, no patch: nothing to review
            assert change == {"diff": "", "truncated": False}
            answered = await call(assistant, "answer_gate", workflow_id=wid, answer={"choice": "yes"})
            assert answered["accepted"] and answered["gateKey"] == inbox[0]["gateKey"]
            done = await call(assistant, "wait_for_run", workflow_id=wid, until="end", timeout_s=60)
            assert done["status"] == "SUCCESS" and done["lastStep"] == "ExecuteST"
            late = await assistant.call_tool(
                "answer_gate", {"workflow_id": wid, "answer": {"choice": "no"}, "gate_key": inbox[0]["gateKey"]}
            )
            assert late.is_error and "Conflict" in late.content[0].text  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_errors_are_tool_errors_and_a_viewer_gets_read_only_tools(base_url: str) -> None:
    """A kodo error reads as a tool error with kodo's message; bad arguments are refused; viewers cannot write."""

    async def scenario() -> None:
        async with AsyncKodoClient(base_url) as kodo:
            async with Client(build_server(kodo, "viewer")) as viewer:
                names = {tool.name for tool in (await viewer.list_tools()).tools}
                assert names == {"get_run", "wait_for_run", "run_diagnosis", "run_diff", "list_inbox", "list_recipes"}
                missing = await viewer.call_tool("get_run", {"workflow_id": "it_nope"})
                assert missing.is_error and "NotFound: run not found" in missing.content[0].text  # type: ignore[union-attr]
                bad = await viewer.call_tool("wait_for_run", {"workflow_id": "it_x", "until": "forever"})
                assert bad.is_error
                refused = await viewer.call_tool("answer_gate", {"workflow_id": "it_x", "answer": {}})
                assert refused.is_error
            async with Client(build_server(kodo, "approver")) as approver:
                unknown = await approver.call_tool(
                    "start_recipe_run",
                    {"recipe_id": "no-such", "version": "v1", "form_data": {}, "queue_partition_key": "p"},
                )
                assert unknown.is_error and "no-such" in unknown.content[0].text  # type: ignore[union-attr]

    asyncio.run(scenario())
