"""Templates on SBX_PROVIDER=e2b (the real SDK against the loopback stand-in, ``tests/e2b_service.py``): a recipe's
deps are installed once per deps hash on this host (cold, then warm) and uploaded into each sandbox, where the
repository's tests import them from the template; a registered E2B template id is booted instead; a failed build
is TEMPLATE_BUILD_FAIL with its log and no sandbox. Uses uv and PyPI (``pytest==8.3.*``), which the machine reaches."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from e2b_service import E2BService, live_settings, running
from git_repos import make_repo
from kodo.adapters.sandbox import SandboxRequest
from kodo.adapters.sandbox.e2b import E2BSandbox
from kodo.adapters.sandbox.e2b_workspace import PACKAGES_DIRECTORY
from kodo.adapters.toolchains import ensure_packages
from kodo.settings import Settings
from kodo.workflows import templates
from template_runs import fix_recipe, run_to_end, sandbox_response

pytestmark = pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv")
PYTEST = "pytest==8.3.*"
TEST_COMMAND = "python3 -m pytest -q test_calc.py"


@pytest.fixture
def sdk(tmp_path: Path) -> Iterator[E2BService]:
    with running(tmp_path / "e2b") as service:
        yield service


@pytest.fixture
def settings(database_url: str, tmp_path: Path, sdk: E2BService) -> Settings:
    return live_settings(database_url, tmp_path, sdk)


def test_packages_are_uploaded_once_per_sandbox_and_the_command_imports_them(sdk: E2BService, tmp_path: Path) -> None:
    """The adapter uploads the built packages, makes their scripts executable, and the command finds pytest on
    PATH and PYTHONPATH from them; without them the sandbox's python has no pytest."""
    packages = ensure_packages(tmp_path / "templates", "c" * 64, [PYTEST])
    workdir = tmp_path / "work"
    workdir.mkdir()
    adapter = E2BSandbox(**sdk.connection())
    command = "pytest --version && python3 -c 'import pytest; print(pytest.__file__)'"
    result = adapter.run(SandboxRequest(task_key="t", cmd=command, workdir=str(workdir), toolchain=str(packages.path)))
    assert result.err_code == "NONE", result.stderr
    assert (
        "pytest 8.3." in result.stdout + result.stderr and f"{PACKAGES_DIRECTORY}/pytest/__init__.py" in result.stdout
    )
    assert result.raw["packages"]["files"] > 0 and result.raw["packages"]["batches"] >= 1
    assert any(path.startswith(f"{PACKAGES_DIRECTORY}/_pytest/") for path in sdk.calls.writes)
    bare = adapter.run(SandboxRequest(task_key="t2", cmd="python3 -c 'import pytest'", workdir=str(workdir)))
    assert bare.err_code == "CMD_NONZERO" and "No module named 'pytest'" in bare.stderr


def test_a_registered_template_id_is_booted_and_nothing_is_uploaded_for_it(sdk: E2BService, tmp_path: Path) -> None:
    """A hot template (request.template_id) is the templateID E2B is asked for; without one, the adapter's own."""
    adapter = E2BSandbox(**sdk.connection(), template="kodo-base")
    assert adapter.run(SandboxRequest(task_key="t", cmd="true", template_id="tpl-with-pytest")).err_code == "NONE"
    assert adapter.run(SandboxRequest(task_key="t", cmd="true")).err_code == "NONE"
    assert sdk.calls.templates == ["tpl-with-pytest", "kodo-base"] and sdk.calls.writes == []


def test_recipe_deps_reach_the_e2b_sandbox_cold_then_warm(
    client: TestClient, engine: sa.Engine, settings: Settings, sdk: E2BService, tmp_path: Path
) -> None:
    """pytest (not on the sandbox's python) comes from the template: the first run builds it (cold), the second
    reuses it (warm); both upload it into their sandbox and the repository's tests pass with it."""
    assert client.post(
        "/api/recipes/import", json={"id": "p", "versions": [fix_recipe("e2b-pytest", [PYTEST], TEST_COMMAND)]}
    ).is_success
    cold_run = run_to_end(client, "e2b-pytest", make_repo(tmp_path / "repo1"), "e2b-templates")
    assert cold_run["status"] == "SUCCESS", cold_run
    cold = sandbox_response(engine, cold_run["runId"])
    assert cold["template"]["environment"] == "cold" and "1 passed" in cold["stdout"]
    warm_run = run_to_end(client, "e2b-pytest", make_repo(tmp_path / "repo2"), "e2b-templates")
    assert warm_run["status"] == "SUCCESS", warm_run
    warm = sandbox_response(engine, warm_run["runId"])
    assert warm["template"]["environment"] == "warm" and warm["template"]["buildMs"] == 0
    assert warm["template"]["packages"] == cold["template"]["packages"] and "1 passed" in warm["stdout"]
    assert warm["raw"]["packages"]["files"] == cold["raw"]["packages"]["files"] > 0
    assert cold["template"]["installMs"] >= 0 and warm["template"]["installMs"] >= 0
    page = client.get(f"/runs/{warm_run['workflowID']}/view").text
    assert "warm" in page and cold["template"]["templateKey"] in page
    assert f'<td class="install">{warm["template"]["installMs"]} ms</td>' in page


def test_a_registered_e2b_template_is_booted_for_the_recipe_and_nothing_is_built(
    client: TestClient, engine: sa.Engine, settings: Settings, sdk: E2BService, tmp_path: Path
) -> None:
    """With a template id registered for the recipe's deps (hot), the sandbox boots it and no packages are built:
    the stand-in's sandbox has no pytest, so the run fails its tests — proof the upload did not happen."""
    spec = fix_recipe("e2b-hot", [PYTEST], TEST_COMMAND)
    assert client.post("/api/recipes/import", json={"id": "h", "versions": [spec]}).is_success
    with engine.begin() as conn:
        templates.register(conn, "e2b-hot", "v1", "tpl-e2b-hot")
    done = run_to_end(client, "e2b-hot", make_repo(tmp_path / "repo"), "e2b-templates")
    assert sdk.calls.templates == ["tpl-e2b-hot"]
    assert done["status"] == "ERROR" and "No module named pytest" in sandbox_response(engine, done["runId"])["stderr"]
    assert not any(path.startswith(PACKAGES_DIRECTORY) for path in sdk.calls.writes)
    assert not (settings.templates_dir / templates.deps_hash(spec) / "packages").exists()


def test_deps_that_do_not_build_fail_template_build_fail_before_any_sandbox(
    client: TestClient, engine: sa.Engine, sdk: E2BService, tmp_path: Path
) -> None:
    """TEMPLATE_BUILD_FAIL once (not retried), the build log in the task's stderr.log; E2B never asked for a sandbox."""
    spec = fix_recipe("e2b-broken", ["not a requirement!!"], TEST_COMMAND)
    assert client.post("/api/recipes/import", json={"id": "b", "versions": [spec]}).is_success
    done = run_to_end(client, "e2b-broken", make_repo(tmp_path / "repo"), "e2b-templates")
    assert done["status"] == "ERROR" and done["error"]["code"] == "TEMPLATE_BUILD_FAIL", done
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT err_code FROM app.sbx_runs WHERE run_id = :r"), {"r": done["runId"]}).all()
        uri = conn.execute(
            sa.text("SELECT uri FROM app.artifacts WHERE run_id = :r AND kind = 'stderr'"), {"r": done["runId"]}
        ).scalar_one()
    assert [r.err_code for r in rows] == ["TEMPLATE_BUILD_FAIL"] and sdk.calls.created == 0
    log = client.get("/api/artifacts/" + quote(uri, safe="")).text
    assert "--- build log ---" in log and "uv pip install --target" in log
