"""The local sandbox never fails open: without a working bubblewrap kodo refuses to start unless
SBX_ALLOW_UNISOLATED=true, and then the health answer, every run header and the console say so."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import make_settings
from kodo.errors import ConfigurationError
from kodo.main import admin_app, build_sandbox, create_app, dbos_client
from kodo.settings import Settings


def _without_bwrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A host where bubblewrap is not installed: PATH holds bash and prlimit only."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("bash", "prlimit"):
        found = shutil.which(name)
        assert found is not None
        (bin_dir / name).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_local_sandbox_without_bwrap_refuses_to_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """SBX_PROVIDER=local with no bwrap is a start-up error naming the fix, not an unisolated sandbox."""
    _without_bwrap(monkeypatch, tmp_path)
    live = make_settings(
        "postgresql://unused@127.0.0.1/unused", tmp_path / "home", SBX_MODE="live", SBX_PROVIDER="local"
    )
    with pytest.raises(ConfigurationError, match="SBX_ALLOW_UNISOLATED=true"):
        build_sandbox(live)


def test_allowed_unisolated_sandbox_runs_and_says_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With SBX_ALLOW_UNISOLATED=true the sandbox starts, and its posture says isolation none."""
    _without_bwrap(monkeypatch, tmp_path)
    allowed = make_settings(
        "postgresql://unused@127.0.0.1/unused",
        tmp_path / "home",
        SBX_MODE="live",
        SBX_PROVIDER="local",
        SBX_ALLOW_UNISOLATED="true",
    )
    sandbox = build_sandbox(allowed)
    assert sandbox.posture()["isolation"] == "none"  # type: ignore[attr-defined]


@pytest.fixture
def unisolated_api(settings: Settings, engine: sa.Engine, client: TestClient) -> Iterator[TestClient]:
    """The API of a process configured with SBX_ALLOW_UNISOLATED=true (live local sandbox)."""
    from kodo.api.deps import ApiContext

    flagged = settings.model_copy(update={"sbx_mode": "live", "sbx_provider": "local", "sbx_allow_unisolated": True})
    dbos = dbos_client(settings, engine)
    app = create_app(ApiContext(settings=flagged, engine=engine, client=dbos, role="monolith"))
    with TestClient(app, base_url="http://127.0.0.1") as http:
        yield http
    dbos.destroy()


def test_health_header_and_console_show_unisolated(client: TestClient, unisolated_api: TestClient) -> None:
    """/healthz, each run header and the console's banner say that commands may run unisolated."""
    assert client.get("/healthz").json().get("unisolatedSandboxAllowed") is None
    assert unisolated_api.get("/healthz").json()["unisolatedSandboxAllowed"] is True
    intent = client.post("/api/intents", json={"goal": "g", "inputs": {}, "constraints": {}}).json()["intentId"]
    client.post("/api/runs", json={"intentId": intent, "queuePartitionKey": "p1"})
    assert client.get(f"/api/runs/{intent}").json()["sbxUnisolatedAllowed"] is False
    assert unisolated_api.get(f"/api/runs/{intent}").json()["sbxUnisolatedAllowed"] is True
    assert 'data-kodo="unisolated"' in unisolated_api.get("/").text
    assert 'data-kodo="unisolated"' not in client.get("/").text


def test_worker_health_shows_unisolated(settings: Settings, engine: sa.Engine) -> None:
    """A worker's admin /healthz says so too."""
    flagged = settings.model_copy(update={"sbx_mode": "live", "sbx_provider": "local", "sbx_allow_unisolated": True})
    with TestClient(admin_app(flagged, engine), base_url="http://127.0.0.1") as admin:
        assert admin.get("/healthz").json()["unisolatedSandboxAllowed"] is True
    with TestClient(admin_app(settings, engine), base_url="http://127.0.0.1") as admin:
        assert "unisolatedSandboxAllowed" not in admin.get("/healthz").json()
