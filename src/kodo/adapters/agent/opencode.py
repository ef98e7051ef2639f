"""``OC_PROVIDER=opencode``: the client of a real ``opencode serve`` (pinned 1.18.x), over HTTP.

One structured call = one **fresh session** (this also sidesteps OpenCode issue #26929, where a
session holding a ``format`` message cannot list its messages):

1. ``GET /global/health`` once (the version must be 1.18.x) and the server's tool ids.
2. Find the session tagged ``kodo:<run>:<step>:<attempt>:<hash of op key and prompt text>`` (a
   re-executed step re-attaches to it) or ``POST /session`` with that title and a permission
   ruleset that denies what the agent may not use, so nothing asks.
3. Admit the prompt at most once: the user message id is derived from the tag; ``GET …/message/<id>``
   answering 404 means "not admitted yet", and only then ``POST …/prompt_async`` with
   ``format: {type: "json_schema", schema}`` and every tool outside the allowlist switched off.
4. Poll ``GET /session/status`` until the session is idle, rejecting (with a message, so the turn
   goes on) any permission ask of the session. The final assistant message's ``info.structured`` is
   the answer; ``info.error`` (``StructuredOutputError`` arrives as HTTP 200) is raised.
5. Walk the turn's assistant messages back by cursor: any tool outside the agent's allowlist →
   ``tool-denied``. Tokens and cost are summed into ``raw``.

Stall: no answer within ``OC_TIMEOUT_MS`` → abort, revert the turn's edits, and one retry in a new
session with the prompt suffix "IMPORTANT: Be more concise and tighten scope to avoid timeout.";
a second stall → ``oc_timeout_terminal``. A turn left idle without a completed answer (the server
restarted mid-turn) is reported as orphaned.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kodo.adapters.agent import AgentRequest, AgentResult, Usage
from kodo.adapters.agent.policy import (
    AgentTimeout,
    AgentUnavailable,
    StructuredOutputFailure,
    allowed_tools,
    check_tools,
    live_or_fallback,
    require_keys,
    tool_allowed,
)
from kodo.adapters.agent.prompting import system_prompt, user_prompt

SUPPORTED_VERSION = "1.18."
# The tool ids of opencode 1.18.33 (GET /experimental/tool/ids), used if the server does not say.
KNOWN_TOOLS = (
    "invalid",
    "question",
    "bash",
    "read",
    "glob",
    "grep",
    "edit",
    "write",
    "task",
    "webfetch",
    "todowrite",
    "websearch",
    "skill",
    "apply_patch",
)
_PERMISSION_OF = {"write": "edit", "patch": "edit", "apply_patch": "edit", "ls": "list"}
_REJECTION = "kodo runs this step headless and does not allow this action; continue without it."


def permission_rules(agent: str) -> list[dict[str, str]]:
    """The session's ruleset: deny everything, then allow the agent's tools (last match wins)."""
    rules = [{"permission": "*", "pattern": "*", "action": "deny"}]
    names = sorted({_PERMISSION_OF.get(tool, tool) for tool in allowed_tools(agent)} | {"StructuredOutput"})
    rules += [{"permission": name, "pattern": "*", "action": "allow"} for name in names]
    rules += [{"permission": name, "pattern": "*", "action": "deny"} for name in ("external_directory", "doom_loop")]
    return rules


@dataclass
class _Finished:
    session_id: str
    message_id: str
    info: dict[str, Any]
    reattached: bool
    rejected: list[dict[str, Any]] = field(default_factory=list)


class OpenCodeAgent:
    """A CodingAgent backed by ``opencode serve``."""

    mode = "live"
    provider = "opencode"

    def __init__(
        self,
        base_url: str,
        *,
        password: str | None = None,
        username: str = "opencode",
        timeout_ms: int = 300_000,
        strict: bool = False,
        workspaces_dir: Path | None = None,
        transport: httpx.BaseTransport | None = None,
        poll_interval: float = 0.1,
        orphan_grace_s: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_ms / 1000
        self.strict = strict
        self.workspaces_dir = workspaces_dir
        self.poll_interval = poll_interval
        self.orphan_grace_s = orphan_grace_s
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=httpx.BasicAuth(username, password) if password else None,
            timeout=httpx.Timeout(30.0, connect=5.0),
            transport=transport,
        )
        self._lock = threading.Lock()
        self._server: dict[str, Any] | None = None

    def close(self) -> None:
        self._http.close()

    # --- the port ------------------------------------------------------------------------------

    def structured(self, request: AgentRequest) -> AgentResult:
        return live_or_fallback(request, self._structured, strict=self.strict, provider=self.provider)

    def health(self) -> dict[str, Any]:
        """``GET /global/health``; raises AgentUnavailable unless healthy and 1.18.x."""
        response = self._http.get("/global/health")
        if response.status_code != 200:
            raise AgentUnavailable(f"oc_live_unavailable:health: HTTP {response.status_code} from {self.base_url}")
        body = response.json()
        version = str(body.get("version", ""))
        if body.get("healthy") is not True:
            raise AgentUnavailable(f"oc_live_unavailable:health: opencode at {self.base_url} is not healthy")
        if not version.startswith(SUPPORTED_VERSION):
            raise AgentUnavailable(
                f"oc_live_unavailable:health: opencode {version} is not supported; kodo pins {SUPPORTED_VERSION}x"
            )
        return dict(body)

    def _server_info(self) -> dict[str, Any]:
        with self._lock:
            if self._server is None:
                info = self.health()
                ids = self._http.get("/experimental/tool/ids")
                tools = ids.json() if ids.status_code == 200 and isinstance(ids.json(), list) else list(KNOWN_TOOLS)
                self._server = {"version": info["version"], "tools": [str(t) for t in tools]}
            return self._server

    # --- one structured call -------------------------------------------------------------------

    def _structured(self, request: AgentRequest) -> AgentResult:
        started = time.monotonic()
        server = self._server_info()
        finished = self._attempt(request, server, concise=False)
        retried = finished is None
        if finished is None:
            finished = self._attempt(request, server, concise=True)
        if finished is None:
            raise AgentTimeout(request.step_id)
        directory = self._directory(request)
        parts = self._turn_parts(finished, directory)
        tools = [self._tool_name(part) for part in parts if part.get("type") == "tool"]
        check_tools([name for name in tools if name], request.agent)
        info = finished.info
        error = info.get("error")
        if isinstance(error, dict):
            name = str(error.get("name", "UnknownError"))
            message = str((error.get("data") or {}).get("message", ""))
            if name == "StructuredOutputError":
                raise StructuredOutputFailure(message or "Model did not produce structured output")
            raise AgentUnavailable(f"oc_live_unavailable:{request.step_id}:{name}: {message}")
        if "structured" not in info:
            raise StructuredOutputFailure("the turn ended without a structured answer")
        structured = require_keys(info["structured"], request.schema, request.step_id)
        steps = [part for part in parts if part.get("type") == "step-finish"]
        tokens = _sum_tokens(steps)
        return AgentResult(
            usage=Usage(
                model=str(info.get("modelID")) if info.get("modelID") else None,
                input_tokens=tokens["input"],
                output_tokens=tokens["output"] + tokens["reasoning"],
                cached_tokens=tokens["cacheRead"],
                provider_cost_usd=sum(float(step.get("cost", 0) or 0) for step in steps),
            ),
            structured=structured,
            mode=self.mode,
            session_id=finished.session_id,
            duration_ms=int((time.monotonic() - started) * 1000),
            tool_calls=[
                {"tool": self._tool_name(p), "status": (p.get("state") or {}).get("status")}
                for p in parts
                if p.get("type") == "tool"
            ],
            raw={
                "provider": self.provider,
                "serverVersion": server["version"],
                "sessionId": finished.session_id,
                "messageId": finished.message_id,
                "assistantMessageId": info.get("id"),
                "reattached": finished.reattached,
                "stallRetry": retried,
                "finish": info.get("finish"),
                "cost": info.get("cost", 0),
                "tokens": tokens,
                "permissionsRejected": finished.rejected,
            },
        )

    def _directory(self, request: AgentRequest) -> str | None:
        """The run's workspace, when it exists: the OpenCode project the session works in."""
        explicit = request.context.get("workspace")
        if isinstance(explicit, str) and Path(explicit).is_dir():
            return explicit
        if self.workspaces_dir is not None and (self.workspaces_dir / request.run_id).is_dir():
            return str(self.workspaces_dir / request.run_id)
        return None

    def _params(self, directory: str | None, **extra: Any) -> dict[str, Any]:
        return {**({"directory": directory} if directory else {}), **extra}

    def _attempt(self, request: AgentRequest, server: dict[str, Any], *, concise: bool) -> _Finished | None:
        """Admit (once) and wait; None when no answer came in time (the turn is aborted and reverted)."""
        directory = self._directory(request)
        text = user_prompt(request, concise=concise)
        digest = hashlib.sha256(f"{request.op_key}\n{text}".encode()).hexdigest()[:16]
        tag = f"kodo:{request.run_id}:{request.step_id}:{request.attempt}:{digest}" + (":retry" if concise else "")
        message_id = "msg_kodo" + hashlib.sha256(tag.encode()).hexdigest()[:24]
        session_id = self._session(tag, request.agent, directory)
        reattached = self._admitted(session_id, message_id, directory)
        if not reattached:
            self._prompt(session_id, message_id, request, server, directory, concise=concise)
        rejected: list[dict[str, Any]] = []
        info = self._wait(session_id, message_id, directory, rejected)
        if info is None:
            self._abandon(session_id, message_id, directory)
            return None
        return _Finished(session_id, message_id, info, reattached, rejected)

    def _session(self, tag: str, agent: str, directory: str | None) -> str:
        found = self._http.get("/session", params=self._params(directory, search=tag))
        if found.status_code == 200:
            for session in found.json():
                if session.get("title") == tag:
                    return str(session["id"])
        created = self._http.post(
            "/session", params=self._params(directory), json={"title": tag, "permission": permission_rules(agent)}
        )
        _expect(created, "POST /session")
        return str(created.json()["id"])

    def _admitted(self, session_id: str, message_id: str, directory: str | None) -> bool:
        response = self._http.get(f"/session/{session_id}/message/{message_id}", params=self._params(directory))
        if response.status_code == 404:
            return False
        # 200, or 400 from issue #26929 (a stored user message that carried ``format``): it exists.
        if response.status_code in (200, 400):
            return True
        _expect(response, "GET message")
        return True

    def _prompt(
        self,
        session_id: str,
        message_id: str,
        request: AgentRequest,
        server: dict[str, Any],
        directory: str | None,
        *,
        concise: bool,
    ) -> None:
        off = {tool: False for tool in server["tools"] if tool != "invalid" and not tool_allowed(tool, request.agent)}
        body = {
            "messageID": message_id,
            "agent": request.agent,
            "system": system_prompt(request.agent),
            "parts": [{"type": "text", "text": user_prompt(request, concise=concise)}],
            "format": {"type": "json_schema", "schema": request.schema, "retryCount": 2},
            "tools": off,
        }
        response = self._http.post(f"/session/{session_id}/prompt_async", params=self._params(directory), json=body)
        _expect(response, "POST prompt_async")

    def _wait(
        self, session_id: str, message_id: str, directory: str | None, rejected: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.timeout_s
        idle_since: float | None = None
        while time.monotonic() < deadline:
            self._answer_permissions(session_id, directory, rejected)
            status = self._http.get("/session/status", params=self._params(directory))
            _expect(status, "GET /session/status")
            if session_id in status.json():
                idle_since = None
            else:
                last = self._last_message(session_id, directory)
                info = (last or {}).get("info") or {}
                ours = info.get("role") == "assistant" and info.get("parentID") == message_id
                if ours and ((info.get("time") or {}).get("completed") or info.get("error")):
                    return dict(info)
                now = time.monotonic()
                idle_since = idle_since or now
                # An unfinished answer in an idle session is an orphan; no answer at all gets longer
                # (the server may not have picked the prompt up yet on a loaded machine).
                grace = self.orphan_grace_s if ours else self.orphan_grace_s * 6
                if now - idle_since > grace:
                    raise AgentUnavailable(
                        f"oc_orphaned: session {session_id} is idle but message {message_id} has no completed "
                        "answer (the server restarted mid-turn, or the prompt was dropped)"
                    )
            time.sleep(self.poll_interval)
        return None

    def _answer_permissions(self, session_id: str, directory: str | None, rejected: list[dict[str, Any]]) -> None:
        pending = self._http.get("/permission", params=self._params(directory))
        if pending.status_code != 200:
            return
        for ask in pending.json():
            if ask.get("sessionID") != session_id:
                continue
            reply = self._http.post(
                f"/permission/{ask['id']}/reply",
                params=self._params(directory),
                json={"reply": "reject", "message": _REJECTION},
            )
            if reply.status_code == 200:
                rejected.append({"permission": ask.get("permission"), "patterns": ask.get("patterns", [])})

    def _last_message(self, session_id: str, directory: str | None) -> dict[str, Any] | None:
        response = self._http.get(f"/session/{session_id}/message", params=self._params(directory, limit=1))
        if response.status_code != 200 or not response.json():
            return None  # 400: the newest message is still our user message (issue #26929)
        return dict(response.json()[0])

    def _turn_parts(self, finished: _Finished, directory: str | None) -> list[dict[str, Any]]:
        """Every part of the turn's assistant messages, newest message first."""
        path = f"/session/{finished.session_id}/message"
        response = self._http.get(path, params=self._params(directory, limit=1))
        parts: list[dict[str, Any]] = []
        for _ in range(200):
            if response.status_code != 200 or not response.json():
                break
            message = response.json()[0]
            info = message.get("info") or {}
            if info.get("role") != "assistant" or info.get("parentID") != finished.message_id:
                break
            parts += message.get("parts") or []
            cursor = response.headers.get("x-next-cursor")
            if not cursor:
                break
            response = self._http.get(path, params=self._params(directory, limit=1, before=cursor))
        return parts

    @staticmethod
    def _tool_name(part: dict[str, Any]) -> str:
        """The tool a part called; OpenCode files a call of an unavailable tool under ``invalid``."""
        name = str(part.get("tool", ""))
        if name == "invalid":
            called = ((part.get("state") or {}).get("input") or {}).get("tool")
            return str(called) if called else name
        return name

    def _abandon(self, session_id: str, message_id: str, directory: str | None) -> None:
        """Stop a stalled turn and undo its file edits (best effort: the retry runs either way)."""
        calls = (("abort", None), ("revert", {"messageID": message_id}))
        for action, payload in calls:
            with contextlib.suppress(httpx.HTTPError):
                self._http.post(f"/session/{session_id}/{action}", params=self._params(directory), json=payload)


def _expect(response: httpx.Response, what: str) -> None:
    if response.status_code >= 300:
        raise AgentUnavailable(f"oc_live_unavailable:{what}: HTTP {response.status_code}: {response.text[:300]}")


def _sum_tokens(steps: list[dict[str, Any]]) -> dict[str, int]:
    total = {"input": 0, "output": 0, "reasoning": 0, "cacheRead": 0, "cacheWrite": 0}
    for step in steps:
        tokens = step.get("tokens") or {}
        cache = tokens.get("cache") or {}
        total["input"] += int(tokens.get("input", 0) or 0)
        total["output"] += int(tokens.get("output", 0) or 0)
        total["reasoning"] += int(tokens.get("reasoning", 0) or 0)
        total["cacheRead"] += int(cache.get("read", 0) or 0)
        total["cacheWrite"] += int(cache.get("write", 0) or 0)
    return total
