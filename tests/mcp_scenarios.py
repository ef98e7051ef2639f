"""What the MCP tests share, whatever the transport (in process, streamable HTTP, ``kodo mcp`` on stdio): the
tokens of an approver and a viewer, a tool call that must succeed, and the assistant's whole trip."""

from __future__ import annotations

import json
from typing import Any

from mcp import Client

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


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    """Call ``tool``; it must not be a tool error. Returns its structured answer."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result.structured_content


async def run_to_success(assistant: Client, goal: str, partition: str) -> str:
    """Start a compile-default run, wait for its plan gate, approve it and see it end SUCCESS; its workflow id."""
    started = await call(
        assistant,
        "start_recipe_run",
        recipe_id="compile-default",
        version="v1",
        form_data={"goal": goal},
        queue_partition_key=partition,
    )
    wid = str(started["workflowId"])
    waiting = await call(assistant, "wait_for_run", workflow_id=wid, until="input", timeout_s=60)
    assert waiting["nextAction"] == "APPROVE_PLAN"
    await call(assistant, "answer_gate", workflow_id=wid, answer={"choice": "yes", "rationale": "lgtm"})
    done = await call(assistant, "wait_for_run", workflow_id=wid, until="end", timeout_s=60)
    assert done["status"] == "SUCCESS"
    return wid


async def start_refused(client: Client, partition: str) -> str:
    """A start that kodo must refuse: the tool error's text."""
    refused = await client.call_tool(
        "start_recipe_run",
        {"recipe_id": "compile-default", "version": "v1", "form_data": {"goal": "x"}, "queue_partition_key": partition},
    )
    assert refused.is_error
    return str(refused.content[0].text)  # type: ignore[union-attr]
