"""Review at the gate: the plan gate's card carries the plan and the workspace's diff against the run's base
commit (API and console), ``GET /api/runs/{wid}/diff`` serves it as ``text/x-diff``."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from git_repos import BUGGY, TEST_COMMAND, checkout_state, fix_plan, git, make_repo
from helpers import make_settings, table_counts, wait_status
from kodo.settings import Settings


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "home", KODO_REPO_ROOTS=str(tmp_path))


def start(client: TestClient, repo: Path, goal: str = "fix add", **fields: Any) -> str:
    constraints = {"testCommand": TEST_COMMAND, "patchPlan": fix_plan()}
    intent = client.post("/api/intents", json={"goal": goal, "inputs": {"repo": str(repo)}, "constraints": constraints})
    assert intent.status_code == 201, intent.text
    wid = str(intent.json()["intentId"])
    started = client.post("/api/runs", json={"intentId": wid, "queuePartitionKey": "review", **fields})
    assert started.status_code == 201, started.text
    return wid


def plan_gate(client: TestClient, wid: str) -> dict[str, Any]:
    header = wait_status(client, wid, {"WAITING_INPUT"})
    assert header["nextAction"] == "APPROVE_PLAN", header
    (gate,) = [g for g in client.get(f"/api/runs/{wid}/gates").json() if g["state"] == "PENDING"]
    response = client.get(f"/api/runs/{wid}/gates/{gate['gateKey']}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_plan_gate_card_carries_the_plan_and_the_diff_against_the_base_commit(
    client: TestClient, engine: sa.Engine, tmp_path: Path
) -> None:
    """The gate's API view has the plan fields and the numbered diff; the diff is a real patch of the base commit."""
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    before = checkout_state(repo)
    wid = start(client, repo)
    gate = plan_gate(client, wid)

    review = gate["review"]
    assert review["plan"]["design"] == ["Design for: fix add"]
    assert set(review["plan"]) == {"design", "files", "risks", "tests"}
    diff = review["diff"]
    assert diff["base"] == base and diff["files"] == [{"path": "calc.py", "added": 1, "removed": 1}]
    (shown,) = diff["shown"]
    kinds = [(line["kind"], line["old"], line["new"], line["text"]) for line in shown["lines"]]
    assert ("del", 2, None, "    return a - b") in kinds and ("add", None, 2, "    return a + b") in kinds
    assert ("ctx", 1, 1, "def add(a, b):") in kinds
    assert diff["truncated"] is False and diff["diffUrl"] == f"/api/runs/{wid}/diff"

    served = client.get(f"/api/runs/{wid}/diff")
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/x-diff")
    assert "+    return a + b" in served.text
    # The served diff applies to the source's base commit as is (and the source was not touched).
    check = subprocess.run(["git", "-C", str(repo), "apply", "--check", "-"], input=served.text, text=True)
    assert check.returncode == 0
    assert checkout_state(repo) == before and (repo / "calc.py").read_text() == BUGGY
    artifact = client.get(diff["artifactUrl"])
    assert artifact.status_code == 200 and artifact.text == served.text
    with engine.connect() as conn:
        recorded = conn.execute(sa.text("SELECT source_repo, base_commit FROM app.workspaces")).one()
    assert tuple(recorded) == (str(repo), base)


def test_console_gate_card_renders_the_diff_server_side(client: TestClient, tmp_path: Path) -> None:
    """The run page's gate card shows the plan and the diff as HTML rows (added/removed, numbered), per-file details."""
    repo = make_repo(tmp_path / "repo")
    wid = start(client, repo)
    plan_gate(client, wid)
    page = client.get(f"/runs/{wid}/view")
    assert page.status_code == 200
    html = page.text
    assert 'class="diff-file" open' in html and "<code>calc.py</code>" in html
    assert '<tr class="diff-add">' in html and "<code>    return a + b</code>" in html
    assert '<tr class="diff-del">' in html and "Design for: fix add" in html
    assert "Approve Plan" in html


def test_rejected_plan_restores_the_workspace_and_leaves_the_source_alone(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    """A rejected plan fails the run, rolls the workspace back to the base commit; the source never changes."""
    repo = make_repo(tmp_path / "repo")
    before = checkout_state(repo)
    wid = start(client, repo)
    gate = plan_gate(client, wid)
    body = {"payload": {"choice": "no", "rationale": "not this"}, "dedupeKey": "r1", "origin": "manual"}
    assert client.post(f"/api/runs/{wid}/gates/{gate['gateKey']}/reply", json=body).status_code == 200
    done = wait_status(client, wid, {"ERROR", "SUCCESS"})
    assert done["status"] == "ERROR" and done["error"]["code"] == "PLAN_REJECTED", done
    workspace = settings.workspaces_dir / done["runId"]
    assert git(workspace, "status", "--porcelain") == "" and (workspace / "calc.py").read_text() == BUGGY
    assert checkout_state(repo) == before


def test_diff_of_an_unknown_run_or_with_a_query_is_a_clean_4xx(client: TestClient, engine: sa.Engine) -> None:
    """GET /api/runs/{wid}/diff: unknown run → 404, an unknown query parameter → 400; nothing is written."""
    with engine.connect() as conn:
        before = table_counts(conn)
    assert client.get("/api/runs/nope/diff").status_code == 404
    assert client.get("/api/runs/nope/diff?x=1").status_code == 400
    assert client.get("/api/runs/nope/delivery").status_code == 404
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_a_run_without_repository_or_patches_has_an_empty_diff_and_no_diff_artifact(
    client: TestClient, engine: sa.Engine
) -> None:
    """No clone, no patch: nothing to review (the card says so), GET /diff is an empty 200 once patches ran."""
    intent = client.post("/api/intents", json={"goal": "plain", "inputs": {}, "constraints": {}}).json()
    wid = intent["intentId"]
    assert client.get(f"/api/runs/{wid}/diff").status_code == 404  # no run yet
    assert client.post("/api/runs", json={"intentId": wid, "queuePartitionKey": "plain"}).status_code == 201
    gate = plan_gate(client, wid)
    assert gate["review"]["diff"] is None and gate["review"]["plan"]["design"] == ["Design for: plain"]
    empty = client.get(f"/api/runs/{wid}/diff")
    assert empty.status_code == 200 and empty.text == ""
    assert "No change to review" in client.get(f"/runs/{wid}/view").text
    with engine.connect() as conn:
        kinds = conn.execute(sa.text("SELECT kind FROM app.artifacts WHERE step_id = 'ApplyPatchST'")).scalars().all()
    assert kinds == ["none"]
