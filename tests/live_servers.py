"""Local stand-ins for the live agent's servers: kodo's fake model and a real ``opencode serve`` on it.

Both run on loopback only. The OpenCode server is the real npm binary (``opencode-ai``, pinned
1.18.x, installed by ``.ci/run``); tests that need it skip with a clear reason when it is absent.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kodo.adapters.agent.fake_model import MODEL_ID, FakeModelServer
from kodo.adapters.agent.opencode_server import PINNED_VERSION, OpenCodeServer, binary_version, find_binary

PASSWORD = "kodo-test-password"


@pytest.fixture(scope="session")
def fake_model() -> Iterator[FakeModelServer]:
    """kodo's fake OpenAI-compatible model server, in a thread, for the whole session."""
    with FakeModelServer() as server:
        yield server


@pytest.fixture(scope="session")
def opencode_server(fake_model: FakeModelServer) -> Iterator[OpenCodeServer]:
    """A real ``opencode serve`` (Basic auth on) whose only model is the fake; stopped by PID at the end."""
    binary = find_binary()
    if binary is None:
        pytest.skip("opencode is not installed: npm install -g opencode-ai@" + PINNED_VERSION + " (.ci/run does)")
    version = binary_version(binary) or "unknown"
    if not version.startswith("1.18."):
        pytest.skip(f"opencode {version} is installed; kodo pins 1.18.x")
    root = Path(tempfile.mkdtemp(prefix="kodo-opencode-"))
    server = OpenCodeServer(
        home=root / "home", cwd=root / "project", model_base_url=fake_model.base_url, model=MODEL_ID, password=PASSWORD
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
