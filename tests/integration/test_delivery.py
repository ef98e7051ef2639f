"""Delivery: a succeeded run's reviewed change becomes one commit on branch ``kodo/<runId>`` of its source
repository (exactly once, checkout untouched), or a format-patch artifact when the source is read-only;
``kodo runs diff`` / ``kodo runs deliver`` from the command line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from git_repos import BUGGY, FIXED, TEST_COMMAND, branches, checkout_state, fix_plan, git, make_repo
from helpers import make_settings, table_counts, wait_status
from kodo.errors import Conflict
from kodo.settings import Settings
from kodo.workflows import delivery
from processes import clean_env


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "home", KODO_REPO_ROOTS=str(tmp_path))


def delivered_run(client: TestClient, repo: Path, *, deliver: bool = True) -> dict[str, Any]:
    constraints: dict[str, Any] = {"testCommand": TEST_COMMAND, "patchPlan": fix_plan()}
    if deliver:
        constraints["deliver"] = "branch"
    intent = {"goal": "fix add\nso that 2 + 3 = 5", "inputs": {"repo": str(repo)}, "constraints": constraints}
    created = client.post("/api/intents", json=intent)
    assert created.status_code == 201, created.text
    wid = created.json()["intentId"]
    started = client.post("/api/runs", json={"intentId": wid, "queuePartitionKey": "deliver", "autoApprove": True})
    assert started.status_code == 201, started.text
    return wait_status(client, wid, {"SUCCESS", "ERROR"})


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(
        DATABASE_URL=str(settings.database_url),
        KODO_HOME=str(settings.kodo_home),
        KODO_REPO_ROOTS=":".join(str(root) for root in settings.repository_roots),
    )
    return subprocess.run([sys.executable, "-m", "kodo", *args], env=env, capture_output=True, text=True, timeout=120)


def test_delivery_commits_the_reviewed_diff_on_a_new_branch_and_leaves_the_checkout_alone(
    client: TestClient, engine: sa.Engine, settings: Settings, tmp_path: Path
) -> None:
    """One commit on kodo/<runId> (author kodo, goal + run id in the message) whose diff is the reviewed one."""
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    before = checkout_state(repo)
    done = delivered_run(client, repo)
    assert done["status"] == "SUCCESS", done
    run_id, branch = done["runId"], f"kodo/{done['runId']}"

    shown = client.get(f"/api/runs/{done['workflowID']}/delivery").json()
    assert shown["status"] == "delivered" and shown["mode"] == "branch" and shown["branch"] == branch
    assert branches(repo) == sorted(["main", branch])
    assert git(repo, "rev-parse", branch).strip() == shown["commit"]
    assert git(repo, "rev-list", "--count", f"{base}..{branch}").strip() == "1"
    assert (
        git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>", branch).strip()
        == "kodo <kodo@localhost>|kodo <kodo@localhost>"
    )
    message = git(repo, "log", "-1", "--format=%B", branch)
    assert "fix add" in message and run_id in message
    reviewed = client.get(f"/api/runs/{done['workflowID']}/diff").text
    assert git(repo, "diff", "--binary", base, branch) == reviewed
    assert git(repo, "show", f"{branch}:calc.py") == FIXED
    assert checkout_state(repo) == before and (repo / "calc.py").read_text() == BUGGY
    page = client.get(f"/runs/{done['workflowID']}/view").text
    assert f'<code id="delivery-branch">{branch}</code>' in page and shown["commit"] in page
    assert f"git -C {repo} diff {base[:12]} {branch}" in page

    # Delivering again (by hand, or a retried step) finds the branch: same commit, no second one, no new row.
    with engine.connect() as conn:
        counts = table_counts(conn)
    again = delivery.deliver(engine, settings, run_id, "cli")
    assert again["status"] == "delivered" and again["commit"] == shown["commit"]
    assert git(repo, "rev-list", "--count", f"{base}..{branch}").strip() == "1"
    with engine.connect() as conn:
        assert table_counts(conn) == counts


def test_a_delivery_cut_off_after_its_branch_closes_its_row_without_a_second_commit(
    client: TestClient, engine: sa.Engine, settings: Settings, tmp_path: Path
) -> None:
    """A pending ledger row whose branch already exists (a crash between the two) is closed on the same commit."""
    repo = make_repo(tmp_path / "repo")
    done = delivered_run(client, repo)
    run_id = done["runId"]
    commit = git(repo, "rev-parse", f"kodo/{run_id}").strip()
    with engine.begin() as conn:  # the state a kill -9 between update-ref and the ledger update leaves
        conn.execute(
            sa.text("UPDATE app.deliveries SET status = 'pending', commit_sha = NULL, delivered_at = NULL"),
        )
    again = delivery.deliver(engine, settings, run_id, "cli")
    assert again["status"] == "delivered" and again["commit"] == commit
    assert git(repo, "rev-parse", f"kodo/{run_id}").strip() == commit


def test_runs_without_delivery_leave_the_source_alone_and_the_cli_delivers_by_hand(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    """No ``deliver`` constraint: no branch; ``kodo runs diff`` prints the diff, ``kodo runs deliver`` delivers."""
    repo = make_repo(tmp_path / "repo")
    before = checkout_state(repo)
    done = delivered_run(client, repo, deliver=False)
    assert done["status"] == "SUCCESS", done
    assert branches(repo) == ["main"] and checkout_state(repo) == before
    assert client.get(f"/api/runs/{done['workflowID']}/delivery").status_code == 404

    printed = cli(settings, "runs", "diff", done["workflowID"])
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == client.get(f"/api/runs/{done['workflowID']}/diff").text
    delivered = cli(settings, "runs", "deliver", done["runId"])
    assert delivered.returncode == 0, delivered.stderr
    branch, commit = delivered.stdout.split()
    assert branch == f"kodo/{done['runId']}" and git(repo, "rev-parse", branch).strip() == commit
    assert checkout_state(repo) == before
    missing = cli(settings, "runs", "deliver", "no-such-run")
    assert missing.returncode == 1 and "run not found" in missing.stderr


def test_deliver_that_cannot_be_done_is_a_clean_refusal_and_writes_nothing(
    client: TestClient, engine: sa.Engine, settings: Settings, tmp_path: Path
) -> None:
    """A bad ``deliver`` value or one without a repo is a 400; delivering an unfinished run is refused; zero rows."""
    with engine.connect() as conn:
        before = table_counts(conn)
    bad = {"goal": "g", "inputs": {"repo": str(tmp_path)}, "constraints": {"deliver": "main"}}
    assert client.post("/api/intents", json=bad).status_code == 400
    no_repo = {"goal": "g", "inputs": {}, "constraints": {"deliver": "branch"}}
    assert client.post("/api/intents", json=no_repo).status_code == 400
    with engine.connect() as conn:
        assert table_counts(conn) == before
    with pytest.raises(Exception, match="run not found"):
        delivery.deliver(engine, settings, "nope", "cli")


def test_a_source_no_longer_under_the_repository_roots_is_not_delivered(
    client: TestClient, engine: sa.Engine, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    """KODO_REPO_ROOTS changed after the run: ``deliver`` refuses (409, naming the rule), no row, no branch."""
    repo = make_repo(tmp_path / "repo")
    done = delivered_run(client, repo, deliver=False)
    assert done["status"] == "SUCCESS", done
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = make_settings(database_url, tmp_path / "home", KODO_REPO_ROOTS=str(elsewhere))
    with engine.connect() as conn:
        before = table_counts(conn)
    with pytest.raises(Conflict, match="not under KODO_REPO_ROOTS"):
        delivery.deliver(engine, moved, done["runId"], "cli")
    with engine.connect() as conn:
        assert table_counts(conn) == before
    assert branches(repo) == ["main"]
    assert delivery.deliver(engine, settings, done["runId"], "cli")["status"] == "delivered"  # under the roots: yes


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")
def test_a_read_only_source_gets_a_format_patch_artifact_instead(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    """With the source mounted read-only, ``kodo runs deliver`` writes a format-patch artifact that applies cleanly."""
    repo = make_repo(tmp_path / "repo")
    done = delivered_run(client, repo, deliver=False)
    env = clean_env(
        DATABASE_URL=str(settings.database_url), KODO_HOME=str(settings.kodo_home), KODO_REPO_ROOTS=str(tmp_path)
    )
    command = ["bwrap", "--dev-bind", "/", "/", "--ro-bind", str(repo), str(repo), "--"]
    command += [sys.executable, "-m", "kodo", "runs", "deliver", done["runId"]]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    mode, uri = result.stdout.split()
    assert mode == "patch" and uri.endswith("/delivery.patch") and branches(repo) == ["main"]
    patch = client.get(f"/api/runs/{done['workflowID']}/delivery").json()
    assert patch["mode"] == "patch" and patch["status"] == "delivered"
    served = client.get("/api/artifacts/" + quote(uri, safe=""))
    assert served.status_code == 200 and "From: kodo <kodo@localhost>" in served.text
    check = subprocess.run(["git", "-C", str(repo), "apply", "--check", "-"], input=served.text, text=True)
    assert check.returncode == 0


def test_a_branch_that_is_not_kodos_is_never_moved_and_the_run_still_succeeds(
    client: TestClient, engine: sa.Engine, tmp_path: Path
) -> None:
    """kodo/<runId> already names another commit: the delivery is ``failed`` (said why), the branch stays put,
    the run (whose tests passed) stays SUCCESS."""
    from kodo.identity import run_id_for

    repo = make_repo(tmp_path / "repo")
    constraints = {"testCommand": TEST_COMMAND, "patchPlan": fix_plan(), "deliver": "branch"}
    created = client.post("/api/intents", json={"goal": "g", "inputs": {"repo": str(repo)}, "constraints": constraints})
    wid = created.json()["intentId"]
    branch = f"kodo/{run_id_for(wid)}"
    git(repo, "branch", branch)  # somebody else's branch, at the base commit
    taken = git(repo, "rev-parse", branch).strip()
    started = client.post("/api/runs", json={"intentId": wid, "queuePartitionKey": "deliver", "autoApprove": True})
    assert started.status_code == 201
    done = wait_status(client, wid, {"SUCCESS", "ERROR"})
    assert done["status"] == "SUCCESS", done
    shown = client.get(f"/api/runs/{wid}/delivery").json()
    assert shown["status"] == "failed" and shown["error"]["code"] == "DELIVERY_FAILED"
    assert "already exists" in shown["error"]["message"] and shown["commit"] is None
    assert git(repo, "rev-parse", branch).strip() == taken
    page = client.get(f"/runs/{wid}/view").text
    assert "DELIVERY_FAILED" in page
