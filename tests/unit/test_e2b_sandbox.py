"""The E2B provider as far as it can be tested without E2B: configuration, and the SDK's failures classified.

Untested here (no E2B account or internet on this machine): a sandbox that really boots, runs the
command, streams output and is killed. The SDK is pointed at loopback only.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kodo.adapters.sandbox import SandboxRequest
from kodo.adapters.sandbox.e2b import E2BSandbox
from kodo.errors import ConfigurationError
from kodo.main import build_sandbox
from kodo.models import RETRYABLE_SANDBOX_CODES
from kodo.settings import load_settings


@pytest.fixture(autouse=True)
def _no_connection_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2B_CONNECTION_RETRIES", "0")


@pytest.fixture
def control_plane() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback stand-in for E2B's API that refuses every sandbox creation with 401."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body or b"{}")})
            data = json.dumps({"code": 401, "message": "Invalid API key"}).encode()
            self.send_response(401)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_e2b_without_a_key_is_a_configuration_error(tmp_path: Path) -> None:
    """SBX_PROVIDER=e2b without E2B_API_KEY stops at build time, naming the variable."""
    settings = load_settings({"SBX_MODE": "live", "SBX_PROVIDER": "e2b", "KODO_HOME": str(tmp_path)})
    with pytest.raises(ConfigurationError, match="E2B_API_KEY"):
        build_sandbox(settings)


def test_e2b_with_a_key_builds(tmp_path: Path) -> None:
    """With E2B_API_KEY set, build_sandbox returns the E2B provider (no network touched)."""
    env = {"SBX_MODE": "live", "SBX_PROVIDER": "e2b", "E2B_API_KEY": "e2b_x", "KODO_HOME": str(tmp_path)}
    sandbox = build_sandbox(load_settings(env))
    assert isinstance(sandbox, E2BSandbox) and sandbox.provider == "e2b"


def test_unreachable_api_is_a_retryable_net_fail() -> None:
    """An E2B API that cannot be reached → NET_FAIL (retried by the step), no sandbox to kill."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sandbox = E2BSandbox("e2b_x", api_url=f"http://127.0.0.1:{port}", domain="localhost", request_timeout_s=5)
    result = sandbox.run(SandboxRequest(task_key="k", cmd="echo hi"))
    assert result.err_code == "NET_FAIL" and result.err_code in RETRYABLE_SANDBOX_CODES
    assert result.sandbox_ref == "e2b:none" and "killed" not in result.raw


def test_refused_creation_is_classified_and_sent_with_the_key(control_plane: tuple[str, list[dict[str, Any]]]) -> None:
    """A sandbox creation refused by the API is a BOOT_FAIL; the SDK sent our key, net policy and task key."""
    url, seen = control_plane
    sandbox = E2BSandbox("e2b_secret", api_url=url, domain="localhost", request_timeout_s=5)
    result = sandbox.run(SandboxRequest(task_key="task-1", cmd="echo hi", net=False))
    assert result.err_code == "BOOT_FAIL" and result.exit != 0
    assert "Invalid API key" in result.stderr or "401" in result.stderr or "Authentication" in result.stderr
    assert seen and seen[0]["path"].endswith("/sandboxes")
    headers = {k.lower(): v for k, v in seen[0]["headers"].items()}
    assert headers.get("x-api-key") == "e2b_secret"
    assert seen[0]["body"]["metadata"] == {"kodoTaskKey": "task-1"}
    assert seen[0]["body"].get("allow_internet_access") is False or seen[0]["body"].get("allowInternetAccess") is False


def test_e2b_output_is_capped_like_the_local_sandbox() -> None:
    """A command that prints without end keeps only the first MAX_OUTPUT_BYTES (1 MiB), the rest counted."""
    from kodo.adapters.sandbox.e2b import capped
    from kodo.adapters.sandbox.local import MAX_OUTPUT_BYTES

    flood = "é" * MAX_OUTPUT_BYTES  # 2 bytes each in UTF-8
    kept, dropped = capped(flood)
    assert len(kept.encode()) == MAX_OUTPUT_BYTES and dropped == MAX_OUTPUT_BYTES
    assert capped("small") == ("small", 0)
