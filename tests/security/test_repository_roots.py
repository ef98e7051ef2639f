"""Host paths as repositories: a run may clone only a git repository under KODO_REPO_ROOTS, never kodo's own
data, checked at ingress (400, nothing written) and again in the workflow (REPO_NOT_ALLOWED)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from git_repos import seeded_repo
from helpers import make_settings, table_counts, wait_status
from kodo.models import Intent
from kodo.settings import Settings
from kodo.store import intents


def make_repo(path: Path) -> Path:
    return seeded_repo(path, {"secret.txt": "not yours\n"}, message="one")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """KODO_HOME inside the one repository root, so a run's own workspace is under a root too."""
    (tmp_path / "roots").mkdir()
    return make_settings(database_url, tmp_path / "roots" / "home", KODO_REPO_ROOTS=str(tmp_path / "roots"))


def _refused(client: TestClient, engine: sa.Engine, repo: str, expected: str) -> None:
    with engine.connect() as conn:
        before = table_counts(conn)
    intent = client.post("/api/intents", json={"goal": "read it", "inputs": {"repo": repo}, "constraints": {}})
    recipe = {
        "recipeRef": {"id": "python-unittest", "v": "v1"},
        "formData": {"repo": repo, "testCommand": "cat secret.txt"},
        "opts": {"queuePartitionKey": "p1"},
    }
    started = client.post("/api/run", json=recipe)
    for response in (intent, started):
        assert response.status_code == 400, response.text
        assert expected in response.json()["error"]
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_repo_outside_the_roots_is_400(client: TestClient, engine: sa.Engine, tmp_path: Path) -> None:
    """A git repository elsewhere on the host (outside KODO_REPO_ROOTS) is refused at ingress."""
    elsewhere = make_repo(tmp_path / "elsewhere")
    _refused(client, engine, str(elsewhere), "is not under KODO_REPO_ROOTS")


def test_symlink_out_of_the_roots_is_400(client: TestClient, engine: sa.Engine, tmp_path: Path) -> None:
    """A symlink under a root that points outside it is judged by its real path."""
    elsewhere = make_repo(tmp_path / "elsewhere")
    (tmp_path / "roots" / "innocent").symlink_to(elsewhere)
    _refused(client, engine, str(tmp_path / "roots" / "innocent"), "is not under KODO_REPO_ROOTS")


def test_another_runs_workspace_is_400(client: TestClient, engine: sa.Engine, settings: Settings) -> None:
    """A repository inside KODO_HOME (another run's workspace) is refused even though a root contains it."""
    workspace = make_repo(settings.workspaces_dir / "someone-elses-run")
    _refused(client, engine, str(workspace), "is inside KODO_HOME")


@pytest.mark.parametrize(
    ("repo", "expected"),
    [("--upload-pack=touch /tmp/pwned", "must be an absolute path"), ("relative/path", "must be an absolute path")],
)
def test_option_like_and_relative_paths_are_400(
    client: TestClient, engine: sa.Engine, repo: str, expected: str
) -> None:
    """A repo that git would read as an option, or a relative path, never reaches git."""
    _refused(client, engine, repo, expected)


def test_plain_directory_is_400(client: TestClient, engine: sa.Engine, tmp_path: Path) -> None:
    """A directory under the roots that is not a git repository is refused (no silent empty workspace)."""
    (tmp_path / "roots" / "plain").mkdir()
    _refused(client, engine, str(tmp_path / "roots" / "plain"), "is not a git repository")


def test_without_roots_every_repo_is_400(database_url: str, tmp_path: Path, engine: sa.Engine) -> None:
    """With KODO_REPO_ROOTS unset (the default) any repository input is a 400 naming the variable."""
    from kodo.workflows.repositories import allowed_repository

    default = make_settings(database_url, tmp_path / "home")
    with pytest.raises(Exception, match="set KODO_REPO_ROOTS"):
        allowed_repository(str(tmp_path), default)
    assert allowed_repository("", default) is None and allowed_repository(None, default) is None


def test_repo_under_the_roots_is_cloned_without_hardlinks(
    client: TestClient, engine: sa.Engine, settings: Settings, tmp_path: Path
) -> None:
    """A git repository under a root is accepted and cloned into the run's workspace."""
    repo = make_repo(tmp_path / "roots" / "project")
    created = client.post("/api/intents", json={"goal": "ok", "inputs": {"repo": str(repo)}, "constraints": {}})
    assert created.status_code == 201, created.text
    intent_id = created.json()["intentId"]
    started = client.post("/api/runs", json={"intentId": intent_id, "queuePartitionKey": "p1", "autoApprove": True})
    assert started.status_code in {200, 201}, started.text
    header: dict[str, Any] = wait_status(client, intent_id, {"SUCCESS", "ERROR"})
    assert header["status"] == "SUCCESS", header
    clone = settings.workspaces_dir / header["runId"] / "secret.txt"
    assert clone.read_text() == "not yours\n"
    assert clone.stat().st_ino != (repo / "secret.txt").stat().st_ino


def test_the_workflow_checks_again(client: TestClient, engine: sa.Engine, tmp_path: Path) -> None:
    """An intent that reached the database without the ingress check (older kodo, roots since narrowed) fails
    its run with REPO_NOT_ALLOWED instead of cloning."""
    elsewhere = make_repo(tmp_path / "elsewhere")
    with engine.begin() as conn:
        intents.create(
            conn, Intent(id="it_sneaky0000000001", goal="g", inputs={"repo": str(elsewhere)}, constraints={})
        )
    started = client.post(
        "/api/runs", json={"intentId": "it_sneaky0000000001", "queuePartitionKey": "p1", "autoApprove": True}
    )
    assert started.status_code in {200, 201}, started.text
    header = wait_status(client, "it_sneaky0000000001", {"SUCCESS", "ERROR"})
    assert header["status"] == "ERROR" and header["error"]["code"] == "REPO_NOT_ALLOWED", header
