"""A tiny OpenAI-compatible model server on loopback, for tests and demos (never for real work).

It answers ``GET /v1/models`` and ``POST /v1/chat/completions``, plain JSON or SSE chunks
(``stream: true``, as OpenCode asks). The answer follows the JSON schema the caller asked for:

* ``response_format: {type: json_schema}`` (kodo's OpenAI-compatible client) → the JSON as content;
* a ``StructuredOutput`` tool (OpenCode's structured output) → a call of that tool with the JSON;
* anything else (e.g. a title request) → the text ``ok``.

The JSON comes from the replay producer (``replay.produce``) applied to the request's
``<kodo-context>`` block, so a run against OpenCode + this fake behaves like replay mode. A schema
that is neither the plan nor the build schema gets a minimal instance of itself.

Scripted behaviour, by a line ``kodo-fake: <directive>`` in the prompt (tests use these):
``usage=<input>x<output>`` report that usage (else 11 input and 7 output tokens);
``sleep=<ms>`` answer late; ``sleep-unless-concise=<ms>`` answer late unless the prompt carries the
stall-retry suffix; ``no-structured`` answer text only; ``tool=<name>`` call that tool first and
answer on the next request; ``status=<code>`` fail with that HTTP status; ``missing=<key>`` drop a key.

Run standalone: ``python -m kodo.adapters.agent.fake_model --port 8089`` (stop it by PID).
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from kodo.adapters.agent import AgentRequest
from kodo.adapters.agent.prompting import CONCISE_SUFFIX, extract_context
from kodo.adapters.agent.replay import produce

MODEL_ID = "kodo-fake"
_DIRECTIVE = re.compile(r"kodo-fake:\s*([a-z-]+)(?:=([^\s\"\\,]+))?")  # a value ends at a quote: a goal in JSON
_TOOL_ARGS: dict[str, dict[str, Any]] = {
    "bash": {"command": "echo from-fake", "description": "print a word"},
    "read": {"filePath": "README.md"},
    "glob": {"pattern": "**/*.py"},
    "grep": {"pattern": "def "},
    "write": {"filePath": "fake.txt", "content": "written by the fake model\n"},
    "task": {"description": "sub", "prompt": "do it", "subagent_type": "general"},
}


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def minimal_instance(schema: dict[str, Any]) -> Any:
    """The smallest value of a JSON-schema type: required keys only, empty strings and lists."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {key: minimal_instance(props.get(key, {})) for key in schema.get("required", [])}
    return {"array": [], "string": "", "integer": 0, "number": 0, "boolean": False}.get(str(kind))


def answer_for(schema: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The structured answer for a schema, from the producer when it is kodo's plan or build schema."""
    props = schema.get("properties", {})
    agent = "build" if "test_command" in props else "plan" if "design" in props else None
    context: dict[str, Any] | None = None
    for message in reversed(messages):
        if message.get("role") == "user" and (context := extract_context(_text_of(message))) is not None:
            break
    if agent is None:
        value = minimal_instance(schema)
        return value if isinstance(value, dict) else {}
    request = AgentRequest(
        run_id="fake", step_id="fake", attempt=1, agent=agent, prompt="", schema=schema, context=context or {}
    )
    return produce(request)


class FakeModelServer:
    """The server, run in a background thread: ``with FakeModelServer() as fake: fake.base_url``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, including ``/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeModelServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-model", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def completions(self) -> list[dict[str, Any]]:
        """The chat-completion request bodies received so far."""
        with self._lock:
            return [r["body"] for r in self.requests if r["path"].endswith("/chat/completions")]

    # --- the protocol ----------------------------------------------------------------------------

    def _record(self, path: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append({"path": path, "body": body})

    @staticmethod
    def usage(body: dict[str, Any]) -> dict[str, int]:
        """The ``usage`` object of an answer: scripted by ``usage=<input>x<output>``, else 11 in and 7 out."""
        users = [_text_of(m) for m in body.get("messages") or [] if m.get("role") == "user"]
        scripted = [value for name, value in _DIRECTIVE.findall("\n".join(users)) if name == "usage"]
        found = re.match(r"(\d+)x(\d+)", scripted[0]) if scripted else None
        prompt, completion = (int(found.group(1)), int(found.group(2))) if found else (11, 7)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def reply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Decide the reply to one chat-completion request: (HTTP status, a completion message)."""
        messages = body.get("messages") or []
        users = [_text_of(m) for m in messages if m.get("role") == "user"]
        directives = dict(_DIRECTIVE.findall("\n".join(users)))
        if "status" in directives:
            return int(directives["status"]), {"error": {"message": "scripted failure", "type": "fake"}}
        delay = directives.get("sleep") or (
            directives.get("sleep-unless-concise") if not any(CONCISE_SUFFIX in u for u in users) else None
        )
        if delay:
            self._stopping.wait(int(delay) / 1000)
        tools = {t.get("function", {}).get("name"): t.get("function", {}) for t in body.get("tools") or []}
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            schema = fmt.get("json_schema", {}).get("schema", {})
        elif "StructuredOutput" in tools:
            schema = tools["StructuredOutput"].get("parameters", {})
        else:
            return 200, {"role": "assistant", "content": "ok"}
        if "no-structured" in directives:
            return 200, {"role": "assistant", "content": "I would rather not answer in JSON."}
        wanted = directives.get("tool")
        if wanted and not any(m.get("role") == "tool" for m in messages):
            return 200, self._tool_call(wanted, _TOOL_ARGS.get(wanted, {}))
        answer = answer_for(schema, messages)
        answer.pop(directives.get("missing", ""), None)
        if "StructuredOutput" in tools and fmt.get("type") != "json_schema":
            return 200, self._tool_call("StructuredOutput", answer)
        return 200, {"role": "assistant", "content": json.dumps(answer)}

    @staticmethod
    def _tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        call = {
            "id": "call_" + secrets.token_hex(8),
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
        return {"role": "assistant", "content": None, "tool_calls": [call]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def _json(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                server._record(self.path, {})
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": MODEL_ID, "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._json(400, {"error": {"message": "body is not JSON"}})
                    return
                server._record(self.path, body)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                status, message = server.reply(body)
                try:
                    if status != 200:
                        self._json(status, message)
                    elif body.get("stream"):
                        self._stream(body, message)
                    else:
                        self._json(200, _completion(body, message, server.usage(body)))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (an abort): nothing to answer

            def _stream(self, body: dict[str, Any], message: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True
                for chunk in _chunks(body, message, server.usage(body)):
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        return Handler


def _completion(body: dict[str, Any], message: dict[str, Any], usage: dict[str, int]) -> dict[str, Any]:
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return {
        "id": "chatcmpl-" + secrets.token_hex(8),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", MODEL_ID),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


def _chunks(body: dict[str, Any], message: dict[str, Any], usage: dict[str, int]) -> list[dict[str, Any]]:
    """The SSE chunks of one answer; tool-call arguments are split in two to exercise reassembly."""
    base = {"id": "chatcmpl-" + secrets.token_hex(8), "object": "chat.completion.chunk", "created": int(time.time())}
    base["model"] = body.get("model", MODEL_ID)

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": ""})]
    if message.get("tool_calls"):
        for index, call in enumerate(message["tool_calls"]):
            args = call["function"]["arguments"]
            half = len(args) // 2
            head = {"index": index, "id": call["id"], "type": "function"}
            out.append(
                chunk({"tool_calls": [{**head, "function": {"name": call["function"]["name"], "arguments": ""}}]})
            )
            out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": args[:half]}}]}))
            out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": args[half:]}}]}))
        out.append(chunk({}, "tool_calls"))
    else:
        out.append(chunk({"content": message.get("content") or ""}))
        out.append(chunk({}, "stop"))
    out.append({**base, "choices": [], "usage": usage})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="kodo's fake OpenAI-compatible model server (loopback only)")
    parser.add_argument("--port", type=int, default=8089)
    args = parser.parse_args(argv)
    server = FakeModelServer(port=args.port)
    server._httpd.serve_forever()


if __name__ == "__main__":
    main()
