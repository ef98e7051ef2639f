"""OpenCodeAgent's error paths over httpx.MockTransport: a scripted stand-in for the 1.18 server API.

The happy path also runs against the real ``opencode serve`` in tests/contract; here each failure the
real server can produce is scripted exactly: StructuredOutputError (HTTP 200 + ``info.error``), a
tool outside the allowlist (also filed as ``invalid``), the child-session ban, a stall then a
tightened retry, a terminal stall, a permission ask, an orphaned turn, an unsupported version.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from kodo.adapters.agent import BUILD_SCHEMA, PLAN_SCHEMA, AgentRequest
from kodo.adapters.agent.opencode import OpenCodeAgent, permission_rules
from kodo.adapters.agent.policy import (
    AgentTimeout,
    AgentUnavailable,
    ChildSessionDenied,
    StructuredOutputFailure,
    ToolDenied,
)
from kodo.adapters.agent.prompting import CONCISE_SUFFIX

PLAN = {"goal": "g", "design": ["d"], "files": [], "risks": [], "tests": ["test0"]}


@dataclass
class Script:
    """What the scripted server does with one prompt."""

    structured: dict[str, Any] | None = field(default_factory=lambda: dict(PLAN))
    error: dict[str, Any] | None = None
    tools: list[str] = field(default_factory=list)
    stall: bool = False
    ask: bool = False
    orphan: bool = False
    dropped: bool = False


class FakeOpenCode:
    """Just enough of opencode 1.18's root API, in memory."""

    def __init__(self, decide: Callable[[str, int], Script], version: str = "1.18.33") -> None:
        self.decide = decide
        self.version = version
        self.sessions: dict[str, dict[str, Any]] = {}
        self.prompts: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str]] = []
        self.asks: dict[str, dict[str, Any]] = {}
        self.replies: list[dict[str, Any]] = []
        self.auth: set[str | None] = set()

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # --- the routes ------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.auth.add(request.headers.get("authorization"))
        method, path = request.method, request.url.path
        self.calls.append((method, path))
        body = json.loads(request.content) if request.content else None
        parts = path.strip("/").split("/")
        if path == "/global/health":
            return httpx.Response(200, json={"healthy": True, "version": self.version})
        if path == "/experimental/tool/ids":
            return httpx.Response(200, json=["invalid", "bash", "read", "glob", "grep", "edit", "write", "task"])
        if path == "/session" and method == "GET":
            search = request.url.params.get("search", "")
            return httpx.Response(200, json=[s["info"] for s in self.sessions.values() if search in s["info"]["title"]])
        if path == "/session" and method == "POST":
            sid = f"ses_{len(self.sessions) + 1:04d}"
            self.sessions[sid] = {"info": {"id": sid, **body}, "messages": [], "busy": False}
            return httpx.Response(200, json=self.sessions[sid]["info"])
        if path == "/session/status":
            return httpx.Response(200, json={sid: {"type": "busy"} for sid, s in self.sessions.items() if s["busy"]})
        if path == "/permission" and method == "GET":
            return httpx.Response(200, json=list(self.asks.values()))
        if parts[0] == "permission" and method == "POST":
            ask = self.asks.pop(parts[1])
            self.replies.append(body)
            self._finish(ask["sessionID"], Script())
            return httpx.Response(200, json=True)
        session = self.sessions[parts[1]]
        if parts[2:] == ["prompt_async"]:
            return self._prompt(parts[1], body)
        if parts[2:] == ["abort"]:
            if session["busy"]:
                session["busy"] = False
                self._assistant(parts[1], error={"name": "MessageAbortedError", "data": {"message": "aborted"}})
            return httpx.Response(200, json=True)
        if parts[2:] == ["revert"]:
            return httpx.Response(200, json=session["info"])
        if parts[2] == "message" and len(parts) == 4:
            found = [m for m in session["messages"] if m["info"]["id"] == parts[3]]
            if not found:
                return httpx.Response(404, json={"name": "NotFoundError", "data": {"message": "Message not found"}})
            return httpx.Response(400 if found[0]["info"]["role"] == "user" else 200, json=found[0])
        if parts[2] == "message":
            return self._page(session, request.url.params.get("before"))
        return httpx.Response(404, json={"name": "NotFoundError"})

    def _page(self, session: dict[str, Any], before: str | None) -> httpx.Response:
        index = len(session["messages"]) - 1 if before is None else int(base64.b64decode(before)) - 1
        if index < 0:
            return httpx.Response(200, json=[])
        message = session["messages"][index]
        if message["info"]["role"] == "user":  # issue #26929: a page holding the format message fails
            return httpx.Response(400, json={"name": "BadRequest"})
        headers = {"x-next-cursor": base64.b64encode(str(index).encode()).decode()} if index > 0 else {}
        return httpx.Response(200, json=[message], headers=headers)

    def _prompt(self, sid: str, body: dict[str, Any]) -> httpx.Response:
        self.prompts.append(body)
        session = self.sessions[sid]
        session["messages"].append({"info": {"id": body["messageID"], "role": "user", "format": body["format"]}})
        session["user"] = body["messageID"]
        script = self.decide(body["parts"][0]["text"], len(self.prompts))
        if script.stall:
            session["busy"] = True
        elif script.ask:
            session["busy"] = True
            self.asks["per_1"] = {"id": "per_1", "sessionID": sid, "permission": "read", "patterns": [".env"]}
        elif script.orphan:
            self._assistant(sid, completed=False)
        elif script.dropped:
            pass  # admitted, never answered, session idle
        else:
            self._finish(sid, script)
        return httpx.Response(204)

    def _finish(self, sid: str, script: Script) -> None:
        self.sessions[sid]["busy"] = False
        for tool in script.tools:
            state: dict[str, Any] = {"status": "completed", "input": {}}
            if tool.startswith("invalid:"):
                tool, state["input"] = "invalid", {"tool": tool.split(":", 1)[1], "error": "unavailable tool"}
            self._assistant(sid, parts=[{"type": "tool", "tool": tool, "state": state}])
        self._assistant(sid, structured=script.structured, error=script.error)

    def _assistant(
        self,
        sid: str,
        *,
        structured: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        parts: list[dict[str, Any]] | None = None,
        completed: bool = True,
    ) -> None:
        session = self.sessions[sid]
        info: dict[str, Any] = {
            "id": f"msg_a{len(session['messages'])}",
            "role": "assistant",
            "parentID": session["user"],
            "time": {"created": 1, **({"completed": 2} if completed else {})},
            "finish": "tool-calls",
        }
        if structured is not None and error is None:
            info["structured"] = structured
        if error is not None:
            info["error"] = error
        step = {"type": "step-finish", "tokens": {"input": 3, "output": 2, "reasoning": 0, "cache": {"read": 1}}}
        session["messages"].append({"info": info, "parts": [*(parts or []), step]})


# --- helpers ------------------------------------------------------------------------------------


def request(agent: str = "plan", prompt: str = "Goal: g", **context: Any) -> AgentRequest:
    return AgentRequest(
        run_id="run_u",
        step_id="CompileST" if agent == "plan" else "DecideST",
        attempt=1,
        agent=agent,
        prompt=prompt,
        schema=PLAN_SCHEMA if agent == "plan" else BUILD_SCHEMA,
        context={"intent": {"goal": "g", "constraints": {}}, "workload": {"steps": 1}, **context},
    )


def client(server: FakeOpenCode, *, strict: bool = True, timeout_ms: int = 2000) -> OpenCodeAgent:
    return OpenCodeAgent(
        "http://oc.test",
        password="pw",
        timeout_ms=timeout_ms,
        strict=strict,
        transport=server.transport(),
        poll_interval=0.01,
        orphan_grace_s=0.2,
    )


def always(script: Script) -> Callable[[str, int], Script]:
    return lambda text, n: script


# --- the tests ----------------------------------------------------------------------------------


def test_structured_answer_from_one_fresh_session() -> None:
    """A call makes one tagged session, admits one prompt with format + tool switches, returns info.structured."""
    server = FakeOpenCode(always(Script()))
    result = client(server).structured(request())
    assert result.structured == PLAN and result.mode == "live"
    assert len(server.sessions) == 1 and len(server.prompts) == 1
    session = next(iter(server.sessions.values()))["info"]
    assert session["title"].startswith("kodo:run_u:CompileST:1:")
    assert session["permission"] == permission_rules("plan")
    prompt = server.prompts[0]
    assert prompt["format"]["type"] == "json_schema" and prompt["format"]["schema"] == PLAN_SCHEMA
    assert prompt["agent"] == "plan" and prompt["messageID"].startswith("msg")
    assert prompt["tools"] == {"bash": False, "edit": False, "write": False, "task": False}
    assert "<kodo-context>" in prompt["parts"][0]["text"]
    assert result.raw is not None and result.raw["tokens"]["input"] == 3 and result.raw["reattached"] is False
    assert server.auth == {"Basic " + base64.b64encode(b"opencode:pw").decode()}


def test_build_agent_keeps_its_tools_on() -> None:
    """The build agent's allowlist (edit, write, bash, patch) stays switched on; the rest is off."""
    server = FakeOpenCode(always(Script(structured={"patch": [], "tests": [], "test_command": "echo"})))
    client(server).structured(request("build"))
    assert server.prompts[0]["tools"] == {"task": False}


def test_same_call_again_reattaches_without_prompting_twice() -> None:
    """A re-executed step finds its tagged session and admitted message: no second prompt."""
    server = FakeOpenCode(always(Script()))
    agent = client(server)
    first = agent.structured(request())
    again = agent.structured(request())
    assert len(server.prompts) == 1 and len(server.sessions) == 1
    assert again.structured == first.structured and again.raw is not None and again.raw["reattached"] is True


def test_structured_output_error_is_raised_in_strict_mode() -> None:
    """HTTP 200 with info.error StructuredOutputError → StructuredOutputFailure (strict: no fallback)."""
    error = {"name": "StructuredOutputError", "data": {"message": "Model did not produce structured output"}}
    server = FakeOpenCode(always(Script(structured=None, error=error)))
    with pytest.raises(StructuredOutputFailure, match="Model did not produce structured output") as raised:
        client(server).structured(request())
    assert raised.value.code == "oc_structured_output_error"


def test_non_strict_falls_back_to_the_producer_and_says_so() -> None:
    """Without strict mode a live failure is answered by the producer, with the live error in raw."""
    error = {"name": "StructuredOutputError", "data": {"message": "no"}}
    server = FakeOpenCode(always(Script(structured=None, error=error)))
    result = client(server, strict=False).structured(request())
    assert result.raw is not None and result.raw["fallback"] == "producer"
    assert result.raw["errorCode"] == "oc_structured_output_error"
    assert result.structured["design"] == ["Design for: g"]


def test_provider_error_is_unavailable() -> None:
    """An ApiError on the assistant message (provider down) → AgentUnavailable naming it."""
    error = {"name": "ApiError", "data": {"message": "connect ECONNREFUSED", "isRetryable": True}}
    server = FakeOpenCode(always(Script(structured=None, error=error)))
    with pytest.raises(AgentUnavailable, match="ApiError: connect ECONNREFUSED"):
        client(server).structured(request())


@pytest.mark.parametrize("tool", ["bash", "edit", "task", "invalid:bash", "Read"])
def test_tool_outside_the_plan_allowlist_is_denied(tool: str) -> None:
    """A plan turn that called a tool outside read/grep/glob/ls/skill → tool-denied, even in non-strict mode."""
    server = FakeOpenCode(always(Script(tools=["read", tool])))
    name = tool.split(":")[-1]
    with pytest.raises(ToolDenied, match=rf"^tool-denied: {name} for agent plan$"):
        client(server, strict=False).structured(request())


def test_build_allowlist_admits_edit_write_bash_and_patch() -> None:
    """Build may use edit, write, bash and OpenCode's apply_patch; webfetch is still denied."""
    build = {"patch": [], "tests": [], "test_command": "echo"}
    server = FakeOpenCode(always(Script(structured=build, tools=["read", "edit", "write", "bash", "apply_patch"])))
    result = client(server).structured(request("build"))
    assert [c["tool"] for c in result.tool_calls] == ["apply_patch", "bash", "write", "edit", "read"]
    denied = FakeOpenCode(always(Script(structured=build, tools=["webfetch"])))
    with pytest.raises(ToolDenied, match="tool-denied: webfetch for agent build"):
        client(denied).structured(request("build"))


@pytest.mark.parametrize("key", ["parentID", "parent_session_id", "Parent-Id", "PARENTSESSIONID"])
def test_child_session_keys_are_denied_before_any_request(key: str) -> None:
    """Any context key normalising to parentid/parentsessionid → child_session_denied, nothing sent."""
    server = FakeOpenCode(always(Script()))
    nested = {"intent": {"goal": "g", "inputs": {"deep": [{key: "ses_1"}]}}}
    with pytest.raises(ChildSessionDenied, match="child_session_denied") as raised:
        client(server, strict=False).structured(request(**nested))
    assert raised.value.code == "child_session_denied"
    assert server.calls == []


def test_stall_retries_once_with_the_concise_suffix() -> None:
    """No answer in time → abort + revert, then one retry in a new session whose prompt ends with the suffix."""
    server = FakeOpenCode(lambda text, n: Script(stall=CONCISE_SUFFIX not in text))
    result = client(server, timeout_ms=300).structured(request())
    assert result.structured == PLAN and result.raw is not None and result.raw["stallRetry"] is True
    assert len(server.prompts) == 2 and len(server.sessions) == 2
    assert not server.prompts[0]["parts"][0]["text"].endswith(CONCISE_SUFFIX)
    assert server.prompts[1]["parts"][0]["text"].endswith(CONCISE_SUFFIX)
    assert ("POST", "/session/ses_0001/abort") in server.calls and ("POST", "/session/ses_0001/revert") in server.calls


def test_second_stall_is_terminal() -> None:
    """A stall on the retry too → oc_timeout_terminal, and exactly two prompts were sent."""
    server = FakeOpenCode(always(Script(stall=True)))
    with pytest.raises(AgentTimeout, match="Terminal timeout after retry for CompileST") as raised:
        client(server, timeout_ms=200).structured(request())
    assert raised.value.code == "oc_timeout_terminal"
    assert len(server.prompts) == 2


def test_permission_ask_is_rejected_with_a_message_so_nothing_blocks() -> None:
    """A pending permission ask of the session is answered "reject" + message; the turn then completes."""
    server = FakeOpenCode(always(Script(ask=True)))
    result = client(server).structured(request())
    assert server.replies and server.replies[0]["reply"] == "reject" and server.replies[0]["message"]
    assert result.raw is not None and result.raw["permissionsRejected"] == [
        {"permission": "read", "patterns": [".env"]}
    ]


def test_orphaned_turn_is_reported() -> None:
    """An idle session whose answer never completed (server restarted mid-turn) → oc_orphaned."""
    server = FakeOpenCode(always(Script(orphan=True)))
    with pytest.raises(AgentUnavailable, match="oc_orphaned"):
        client(server).structured(request())


def test_idle_session_without_any_answer_waits_longer_then_is_orphaned() -> None:
    """A prompt nobody picked up (no assistant message, session idle) is orphaned only after 6x the grace."""
    server = FakeOpenCode(always(Script(dropped=True)))
    agent = client(server)
    agent.orphan_grace_s = 0.05
    started = time.monotonic()
    with pytest.raises(AgentUnavailable, match="oc_orphaned"):
        agent.structured(request())
    assert time.monotonic() - started >= 0.3


def test_unsupported_server_version_is_refused() -> None:
    """A server that is not opencode 1.18.x is refused before any session is made."""
    server = FakeOpenCode(always(Script()), version="2.0.1")
    with pytest.raises(AgentUnavailable, match=r"kodo pins 1\.18"):
        client(server).structured(request())
    assert server.sessions == {}


def test_answer_without_required_keys_is_invalid() -> None:
    """A structured answer missing schema-required keys is an AGENT_OUTPUT_INVALID failure."""
    server = FakeOpenCode(always(Script(structured={"goal": "g"})))
    with pytest.raises(Exception, match="lacks required keys") as raised:
        client(server).structured(request())
    assert getattr(raised.value, "code", None) == "AGENT_OUTPUT_INVALID"


def test_unreachable_server_is_unavailable_in_strict_mode() -> None:
    """A transport failure becomes oc_live_unavailable (strict) naming the step."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    agent = OpenCodeAgent("http://oc.test", strict=True, transport=httpx.MockTransport(refuse))
    with pytest.raises(AgentUnavailable, match="oc_live_unavailable:CompileST:ConnectError"):
        agent.structured(request())
