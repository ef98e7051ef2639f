"""A real repository end to end: the approver reviews the diff on the gate card in Chromium, approves, the
repository's tests pass under bwrap, and the change is delivered as branch ``kodo/<runId>`` of the source —
whose checkout never changes (behind a "merge?" gate when the run asks). Rejected, nothing leaves. kill -9
during delivery: still exactly one commit."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from git_repos import BUGGY, TEST_COMMAND, branches, checkout_state, fix_plan, git, make_repo
from helpers import oracle_violations, wait_until
from processes import KodoProcess

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.slow]
needs_browser = pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which("bwrap") is None, reason="needs Debian chromium and bubblewrap"
)
playwright.expect.set_options(timeout=60_000)


@pytest.fixture
def page() -> Iterator[Any]:
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        opened = context.new_page()
        opened.set_default_timeout(30_000)
        yield opened
        context.close()
        browser.close()


def start(base: str, repo: Path, *, auto: bool = False, merge_gate: bool = False) -> str:
    constraints = {"testCommand": TEST_COMMAND, "patchPlan": fix_plan(), "deliver": "branch", "mergeGate": merge_gate}
    intent = {"goal": "fix add", "inputs": {"repo": str(repo)}, "constraints": constraints}
    created = httpx.post(f"{base}/api/intents", json=intent, timeout=30)
    assert created.status_code == 201, created.text
    wid = str(created.json()["intentId"])
    body = {"intentId": wid, "queuePartitionKey": "workspace", "autoApprove": auto}
    assert httpx.post(f"{base}/api/runs", json=body, timeout=30).status_code == 201
    return wid


def recipe(deps: list[str]) -> dict[str, Any]:
    """A recipe that asks for delivery and whose tests need pytest, which the system python lacks."""
    return {
        "id": "fix-with-pytest",
        "v": "v1",
        "name": "fix with pytest",
        "formSchema": {"type": "object", "properties": {"repo": {"type": "string"}, "plan": {"type": "array"}}},
        "intentTmpl": {
            "goal": "fix add",
            "inputs": {"repo": "{{formData.repo}}"},
            "constraints": {
                "testCommand": "python -m pytest -q test_calc.py",
                "patchPlan": "{{formData.plan}}",
                "deliver": "branch",
            },
        },
        "wfEntry": "RunIntent",
        "queue": "intentQ",
        "limits": {"maxSteps": 8, "maxFanout": 2, "maxSbxMin": 5, "maxTokens": 100},
        "eval": [],
        "fixtures": [],
        "sandbox": {"envRef": "local-python-3.11", "deps": deps},
    }


def start_recipe(base: str, repo: Path) -> str:
    imported = httpx.post(f"{base}/api/recipes/import", json={"id": "f", "versions": [recipe(["pytest==8.3.*"])]})
    assert imported.status_code == 201, imported.text
    payload = {
        "recipeRef": {"id": "fix-with-pytest", "v": "v1"},
        "formData": {"repo": str(repo), "plan": fix_plan()},
        "opts": {"queuePartitionKey": "workspace", "allowDraft": True},
    }
    started = httpx.post(f"{base}/api/run", json=payload, timeout=30)
    assert started.status_code == 201, started.text
    return str(started.json()["workflowID"])


def header(base: str, wid: str) -> dict[str, Any]:
    return dict(httpx.get(f"{base}/api/runs/{wid}", timeout=30).json())


def live_server(spawn: Callable[..., KodoProcess], tmp_path: Path, **env: str) -> tuple[KodoProcess, str]:
    server = spawn("up", SBX_MODE="live", SBX_PROVIDER="local", KODO_REPO_ROOTS=str(tmp_path), **env)
    return server, f"http://127.0.0.1:{server.port}"  # type: ignore[attr-defined]


@needs_browser
def test_approver_reviews_the_diff_in_chromium_and_the_source_gains_the_branch(
    spawn: Callable[..., KodoProcess], engine: sa.Engine, page: Any, tmp_path: Path
) -> None:
    """Diff on the gate card → Approve → pytest (installed by the recipe's template) passes under bwrap →
    branch kodo/<runId> with the reviewed diff."""
    repo = make_repo(tmp_path / "repo")
    base_commit = git(repo, "rev-parse", "HEAD").strip()
    before = checkout_state(repo)
    _server, base = live_server(spawn, tmp_path, SBX_DEFAULT_TIMEOUT_MS="60000")
    wid = start_recipe(base, repo)
    page.goto(f"{base}/?wid={wid}")
    card = page.locator("section.gate")
    playwright.expect(card.locator("tr.diff-add")).to_contain_text("return a + b")
    playwright.expect(card.locator("tr.diff-del")).to_contain_text("return a - b")
    playwright.expect(card.locator("details.diff-file summary")).to_contain_text("calc.py")
    playwright.expect(card).to_contain_text("Design for: fix add")
    reviewed = httpx.get(f"{base}/api/runs/{wid}/diff", timeout=30).text
    page.get_by_role("button", name="Approve Plan").click()
    playwright.expect(page.locator("#run-status")).to_have_text("SUCCESS", timeout=120_000)
    playwright.expect(page.locator("#delivery-branch")).to_be_visible()

    run_id = header(base, wid)["runId"]
    branch = f"kodo/{run_id}"
    playwright.expect(page.locator("#delivery-branch")).to_have_text(branch)
    with engine.connect() as conn:
        (row,) = conn.execute(sa.text("SELECT err_code, response FROM app.sbx_runs WHERE run_id = :r"), {"r": run_id})
        assert oracle_violations(conn) == {}
    assert (
        row.err_code == "NONE" and row.response["raw"]["isolation"] == "bwrap" and "1 passed" in row.response["stdout"]
    )
    assert row.response["template"]["environment"] == "cold"  # pytest came from the template's environment
    playwright.expect(page.locator("td.environment-cold")).to_be_visible()
    # The run page: the diff, the delivered commit, and a git command that shows exactly the reviewed change.
    change = page.locator("#run-change")
    playwright.expect(change.locator("tr.diff-add")).to_contain_text("return a + b")
    playwright.expect(page.locator("#delivery-commit")).to_have_text(git(repo, "rev-parse", branch).strip())
    command = page.locator("#delivery-command").inner_text()
    shown = subprocess.run(shlex.split(command), capture_output=True, text=True, check=True, timeout=30).stdout
    assert command.startswith(f"git -C {repo} diff") and shown == git(repo, "diff", base_commit, branch)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    change.get_by_role("button", name="Copy").click()
    playwright.expect(change.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == command
    assert git(repo, "diff", "--binary", base_commit, branch) == reviewed
    assert git(repo, "rev-list", "--count", f"{base_commit}..{branch}").strip() == "1"
    assert checkout_state(repo) == before and (repo / "calc.py").read_text() == BUGGY


@needs_browser
def test_rejected_in_chromium_leaves_the_source_untouched_and_the_workspace_restored(
    spawn: Callable[..., KodoProcess], page: Any, tmp_path: Path
) -> None:
    """Reject on the gate card: PLAN_REJECTED, no branch, the source as it was, the workspace back at its base."""
    repo = make_repo(tmp_path / "repo")
    before = checkout_state(repo)
    _server, base = live_server(spawn, tmp_path)
    wid = start(base, repo)
    page.goto(f"{base}/?wid={wid}")
    playwright.expect(page.locator("section.gate tr.diff-add")).to_contain_text("return a + b")
    page.get_by_role("button", name="Reject").click()
    playwright.expect(page.get_by_role("alert")).to_contain_text("PLAN_REJECTED")
    workspace = tmp_path / "home" / "workspaces" / header(base, wid)["runId"]
    assert git(workspace, "status", "--porcelain") == "" and (workspace / "calc.py").read_text() == BUGGY
    assert branches(repo) == ["main"] and checkout_state(repo) == before


@needs_browser
def test_the_merge_gate_in_chromium_shows_the_tested_diff_then_merge_delivers(
    spawn: Callable[..., KodoProcess], page: Any, tmp_path: Path
) -> None:
    """Approve the plan, the tests pass under bwrap, then the "merge?" card shows the same diff; nothing is
    delivered until Merge is clicked, then branch kodo/<runId> appears with the reviewed diff."""
    repo = make_repo(tmp_path / "repo")
    base_commit, before = git(repo, "rev-parse", "HEAD").strip(), checkout_state(repo)
    _server, base = live_server(spawn, tmp_path)
    wid = start(base, repo, merge_gate=True)
    page.goto(f"{base}/?wid={wid}")
    page.get_by_role("button", name="Approve Plan").click()
    card = page.locator("section.gate")
    playwright.expect(card.get_by_role("heading", name="Merge the change?")).to_be_visible(timeout=120_000)
    playwright.expect(card.locator("tr.diff-add")).to_contain_text("return a + b")
    assert header(base, wid)["nextAction"] == "APPROVE_MERGE" and branches(repo) == ["main"]
    card.get_by_role("button", name="Merge").click()
    playwright.expect(page.locator("#run-status")).to_have_text("SUCCESS", timeout=120_000)
    branch = f"kodo/{header(base, wid)['runId']}"
    playwright.expect(page.locator("#delivery-branch")).to_have_text(branch)
    reviewed = httpx.get(f"{base}/api/runs/{wid}/diff", timeout=30).text
    assert git(repo, "diff", "--binary", base_commit, branch) == reviewed and checkout_state(repo) == before


def test_kill_9_during_delivery_then_recovery_makes_exactly_one_commit(
    spawn: Callable[..., KodoProcess], engine: sa.Engine, tmp_path: Path
) -> None:
    """The process dies right after creating the branch; restarted, the delivery finds it: one commit, row closed."""
    repo = make_repo(tmp_path / "repo")
    base_commit = git(repo, "rev-parse", "HEAD").strip()
    before = checkout_state(repo)
    server = spawn("up", KODO_REPO_ROOTS=str(tmp_path), KODO_FAULT_POINTS="delivery.after_branch:kill")
    base = f"http://127.0.0.1:{server.port}"  # type: ignore[attr-defined]
    wid = start(base, repo, auto=True)
    assert server.proc is not None
    server.proc.wait(timeout=120)  # the fault point killed it (SIGKILL)
    with engine.connect() as conn:
        pending = conn.execute(sa.text("SELECT run_id, status, commit_sha FROM app.deliveries")).one()
    assert pending.status == "pending" and pending.commit_sha is None
    branch = f"kodo/{pending.run_id}"
    made = git(repo, "rev-parse", branch).strip()

    server.restart_unarmed()

    def delivered() -> Any:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT status, commit_sha FROM app.deliveries WHERE status = 'delivered'")
            ).first()

    done = wait_until(delivered, timeout=90, interval=0.2, what="the delivery to be closed")
    assert done.commit_sha == made and git(repo, "rev-parse", branch).strip() == made
    assert git(repo, "rev-list", "--count", f"{base_commit}..{branch}").strip() == "1"
    assert header(base, wid)["status"] == "SUCCESS"
    assert checkout_state(repo) == before
    with engine.connect() as conn:
        assert oracle_violations(conn) == {}


def test_kill_9_during_delivery_after_merge_yes_recovers_to_one_commit_without_rerunning_the_tests(
    spawn: Callable[..., KodoProcess], engine: sa.Engine, tmp_path: Path
) -> None:
    """A "merge?" gate answered yes; the continuation dies right after the branch (kill -9); restarted, it finds
    the branch: one commit, run SUCCESS, the tests ran once."""
    repo = make_repo(tmp_path / "repo")
    base_commit = git(repo, "rev-parse", "HEAD").strip()
    server = spawn("up", KODO_REPO_ROOTS=str(tmp_path), KODO_FAULT_POINTS="delivery.after_branch:kill")
    base = f"http://127.0.0.1:{server.port}"  # type: ignore[attr-defined]
    wid = start(base, repo, auto=True, merge_gate=True)
    wait_until(lambda: header(base, wid).get("nextAction") == "APPROVE_MERGE", timeout=90, what="the merge gate")
    (gate,) = [g for g in httpx.get(f"{base}/api/runs/{wid}/gates", timeout=30).json() if g["state"] == "PENDING"]
    body = {"payload": {"choice": "yes"}, "dedupeKey": "merge-yes", "origin": "manual"}
    assert httpx.post(f"{base}/api/runs/{wid}/gates/{gate['gateKey']}/reply", json=body, timeout=30).status_code == 200
    assert server.proc is not None and server.proc.wait(timeout=120) == -9, server.tail()
    run_id = header_from_db(engine, wid)
    branch = f"kodo/{run_id}"
    made = git(repo, "rev-parse", branch).strip()

    server.env.pop("KODO_FAULT_POINTS")
    server.start()
    wait_until(lambda: header(base, wid)["status"] == "SUCCESS", timeout=90, what="the run to succeed")
    assert git(repo, "rev-parse", branch).strip() == made
    assert git(repo, "rev-list", "--count", f"{base_commit}..{branch}").strip() == "1"
    with engine.connect() as conn:
        delivered = conn.execute(sa.text("SELECT status, commit_sha FROM app.deliveries")).one()
        attempts = conn.execute(sa.text("SELECT count(*) FROM app.sbx_runs WHERE run_id = :r"), {"r": run_id})
        assert tuple(delivered) == ("delivered", made) and attempts.scalar_one() == 1
        assert oracle_violations(conn) == {}


def header_from_db(engine: sa.Engine, wid: str) -> str:
    """The run id of workflow ``wid`` (the server is down)."""
    with engine.connect() as conn:
        return str(conn.execute(sa.text("SELECT id FROM app.runs WHERE workflow_id = :w"), {"w": wid}).scalar_one())
