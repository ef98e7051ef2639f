"""``kodo agent smoke`` and ``kodo sbx smoke`` against local servers and the local sandbox.

One check runs ``python -m kodo`` as a subprocess (the real entry point); the others invoke the same
click commands in-process, with the environment set as a process would see it (an interpreter
start costs seconds on this machine class).
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest
from click.testing import CliRunner, Result

from kodo.adapters.agent.fake_model import MODEL_ID, FakeModelServer
from kodo.cli import cli
from live_servers import fake_model as fake_model
from processes import clean_env, run_cli

pytestmark = pytest.mark.slow
_OURS = ("KODO_", "OC_", "SBX_", "OPENAI_", "OPENCODE_", "E2B_")


def invoke(monkeypatch: pytest.MonkeyPatch, args: list[str], **env: str) -> Result:
    """Run ``kodo <args>`` in-process with only ``env`` among kodo's variables."""
    for key in list(os.environ):
        if key.startswith(_OURS):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return CliRunner().invoke(cli, args)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_agent_smoke_against_an_openai_compatible_server(
    fake_model: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kodo agent smoke with OC_PROVIDER=openai prints OK, the timing and the plan; exit 0."""
    done = invoke(
        monkeypatch,
        ["agent", "smoke", "--goal", "ship it"],
        OC_PROVIDER="openai",
        OPENAI_BASE_URL=fake_model.base_url,
        OPENAI_MODEL=MODEL_ID,
    )
    assert done.exit_code == 0, done.output
    assert "OK provider=openai in" in done.output and '"Design for: ship it"' in done.output


def test_agent_smoke_fails_loudly_when_the_agent_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable agent: exit 1 and a FAIL line with the error (strict, no producer fallback)."""
    url = f"http://127.0.0.1:{closed_port()}/v1"
    done = invoke(monkeypatch, ["agent", "smoke"], OC_PROVIDER="openai", OPENAI_BASE_URL=url)
    assert done.exit_code == 1
    assert "FAIL provider=openai" in done.output and "oc_live_unavailable" in done.output


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")
def test_sbx_smoke_with_the_local_provider() -> None:
    """python -m kodo sbx smoke with SBX_PROVIDER=local: echo ok runs, the network probe is blocked; exit 0."""
    done = run_cli(["sbx", "smoke"], clean_env(SBX_PROVIDER="local"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "'isolation': 'bwrap'" in done.stdout
    assert "OK echo" in done.stdout and "OK network without net: blocked" in done.stdout


def test_sbx_smoke_without_isolation_fails_its_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where bwrap is missing the local provider refuses (naming SBX_ALLOW_UNISOLATED); allowed unisolated, the
    probe connects, so the smoke check fails (exit 1) and says NOT isolated."""
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "bwrap" else _which(name, *a, **k))
    refused = invoke(monkeypatch, ["sbx", "smoke"], SBX_PROVIDER="local")
    assert refused.exit_code == 1 and "SBX_ALLOW_UNISOLATED=true" in refused.output, refused.output
    done = invoke(monkeypatch, ["sbx", "smoke"], SBX_PROVIDER="local", SBX_ALLOW_UNISOLATED="true")
    assert done.exit_code == 1, done.output
    assert "'isolation': 'none'" in done.output and "FAIL network without net: connected: NOT isolated" in done.output


def test_sbx_smoke_refuses_microsandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """kodo sbx smoke with SBX_PROVIDER=microsandbox stops with the not-supported error."""
    done = invoke(monkeypatch, ["sbx", "smoke"], SBX_PROVIDER="microsandbox")
    assert done.exit_code != 0 and "SBX_PROVIDER=microsandbox is not supported" in done.output


_which = shutil.which
