"""Sandbox templates that install: a recipe's deps in a virtual environment per deps hash, built once (cold),
reused (warm), mounted read-only into bwrap and first on PATH; a failed build is TEMPLATE_BUILD_FAIL with its
log. Uses uv and PyPI (``pytest==8.3.*``), which the machine reaches."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from git_repos import make_repo
from helpers import make_settings
from kodo.adapters.sandbox import SandboxRequest
from kodo.adapters.sandbox.local import LocalSandbox
from kodo.adapters.toolchains import ToolchainBuildError, ensure
from kodo.settings import Settings
from template_runs import fix_recipe, run_to_end, sandbox_response

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None or shutil.which("uv") is None, reason="needs bubblewrap and uv"
)
PYTEST = "pytest==8.3.*"
IMPORTS_PYTEST = "python -c 'import pytest, sys; print(pytest.__version__, sys.prefix)'"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url, tmp_path / "home", SBX_MODE="live", SBX_PROVIDER="local", KODO_REPO_ROOTS=str(tmp_path)
    )


def test_environment_is_built_once_then_reused_and_used_read_only_under_bwrap(tmp_path: Path) -> None:
    """Cold build, warm reuse; under bwrap the env's python imports pytest, cannot write it; without it, no pytest."""
    cold = ensure(tmp_path / "templates", "a" * 64, [PYTEST])
    warm = ensure(tmp_path / "templates", "a" * 64, [PYTEST])
    assert cold.built is True and warm.built is False and warm.path == cold.path
    sandbox = LocalSandbox()
    workdir = tmp_path / "work"
    workdir.mkdir()
    request = SandboxRequest(task_key="t1", cmd=IMPORTS_PYTEST, workdir=str(workdir), toolchain=str(cold.path))
    result = sandbox.run(request)
    assert result.err_code == "NONE", result.stderr
    version, prefix = result.stdout.split()
    assert version.startswith("8.3.") and prefix == str(cold.path)
    write = SandboxRequest(
        task_key="t2", cmd=f"touch {cold.path}/bin/x", workdir=str(workdir), toolchain=str(cold.path)
    )
    assert sandbox.run(write).exit != 0 and not (cold.path / "bin" / "x").exists()
    bare = sandbox.run(SandboxRequest(task_key="t3", cmd="python3 -c 'import pytest'", workdir=str(workdir)))
    assert bare.exit != 0 and "No module named 'pytest'" in bare.stderr


def test_a_failed_build_raises_with_its_log_and_leaves_nothing_usable(tmp_path: Path) -> None:
    """A requirement uv cannot parse: ToolchainBuildError carrying uv's message; no ready marker, no venv."""
    with pytest.raises(ToolchainBuildError) as failed:
        ensure(tmp_path / "templates", "b" * 64, ["not a requirement!!"])
    assert "uv pip install" in failed.value.log and "not a requirement!!" in failed.value.log
    assert not (tmp_path / "templates" / ("b" * 64) / ".kodo-ready").exists()
    assert not (tmp_path / "templates" / ("b" * 64) / "venv").exists()


def test_recipe_deps_are_installed_and_the_repository_tests_run_with_them(
    client: TestClient, engine: sa.Engine, tmp_path: Path
) -> None:
    """pytest (absent from the system python) comes from the template: first run cold, second run warm."""
    cold_run = run_to_end(client, "pytest-fix", make_repo(tmp_path / "repo1"), "templates")
    assert cold_run["status"] == "SUCCESS", cold_run
    cold = sandbox_response(engine, cold_run["runId"])
    assert cold["template"]["environment"] == "cold" and "1 passed" in cold["stdout"]
    warm_run = run_to_end(client, "pytest-fix", make_repo(tmp_path / "repo2"), "templates")
    assert warm_run["status"] == "SUCCESS", warm_run
    warm = sandbox_response(engine, warm_run["runId"])
    assert warm["template"]["environment"] == "warm" and warm["template"]["venv"] == cold["template"]["venv"]
    assert warm["template"]["buildMs"] == 0 and cold["template"]["buildMs"] > 0
    page = client.get(f"/runs/{warm_run['workflowID']}/view").text
    assert "warm" in page and cold["template"]["templateKey"] in page


def test_a_recipe_whose_deps_do_not_build_fails_template_build_fail_with_the_log(
    client: TestClient, engine: sa.Engine, tmp_path: Path
) -> None:
    """TEMPLATE_BUILD_FAIL: the run's error, once (not retried), the build log in the task's stderr.log artifact."""
    spec = fix_recipe("broken-deps", ["not a requirement!!"], "python -m pytest -q test_calc.py")
    assert client.post("/api/recipes/import", json={"id": "b", "versions": [spec]}).status_code == 201
    done = run_to_end(client, "broken-deps", make_repo(tmp_path / "repo"), "templates")
    assert done["status"] == "ERROR" and done["error"]["code"] == "TEMPLATE_BUILD_FAIL", done
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT err_code FROM app.sbx_runs WHERE run_id = :r"), {"r": done["runId"]}).all()
        uri = conn.execute(
            sa.text("SELECT uri FROM app.artifacts WHERE run_id = :r AND kind = 'stderr'"), {"r": done["runId"]}
        ).scalar_one()
    assert [r.err_code for r in rows] == ["TEMPLATE_BUILD_FAIL"]
    log = client.get("/api/artifacts/" + quote(uri, safe="")).text
    assert "--- build log ---" in log and "not a requirement!!" in log


@pytest.fixture(autouse=True)
def _pytest_fix_recipe(request: pytest.FixtureRequest) -> None:
    """Import the pytest recipe for the tests that run it."""
    if "client" in request.fixturenames and request.node.name.startswith("test_recipe_deps"):
        client: TestClient = request.getfixturevalue("client")
        spec = fix_recipe("pytest-fix", [PYTEST], "python -m pytest -q test_calc.py")
        assert client.post("/api/recipes/import", json={"id": "p", "versions": [spec]}).status_code == 201
