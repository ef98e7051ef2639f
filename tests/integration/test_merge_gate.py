"""The optional "merge?" gate: a run that asks for delivery with ``mergeGate`` waits, after its tests passed, at a
gate whose card shows the final diff; "yes" delivers branch ``kodo/<runId>``, "no" fails the run MERGE_REJECTED
with nothing delivered and the workspace restored. The continuation never runs the tests again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from git_repos import BUGGY, FIXED, TEST_COMMAND, branches, checkout_state, fix_plan, git, make_repo
from helpers import make_settings, table_counts, wait_status, wait_until
from kodo.settings import Settings


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "home", KODO_REPO_ROOTS=str(tmp_path))


def start(client: TestClient, repo: Path, **extra: Any) -> str:
    """A run that asks for delivery behind a merge gate (its plan gate answered by autoApprove)."""
    constraints = {"testCommand": TEST_COMMAND, "patchPlan": fix_plan(), "deliver": "branch", "mergeGate": True}
    constraints |= extra
    created = client.post(
        "/api/intents", json={"goal": "fix add", "inputs": {"repo": str(repo)}, "constraints": constraints}
    )
    assert created.status_code == 201, created.text
    wid = str(created.json()["intentId"])
    body = {"intentId": wid, "queuePartitionKey": "merge", "autoApprove": True}
    assert client.post("/api/runs", json=body).status_code == 201
    return wid


def merge_gate(client: TestClient, wid: str) -> dict[str, Any]:
    header = wait_status(client, wid, {"WAITING_INPUT", "ERROR", "SUCCESS"})
    assert header["status"] == "WAITING_INPUT" and header["nextAction"] == "APPROVE_MERGE", header
    (gate,) = [g for g in client.get(f"/api/runs/{wid}/gates").json() if g["state"] == "PENDING"]
    card = client.get(f"/api/runs/{wid}/gates/{gate['gateKey']}")
    assert card.status_code == 200, card.text
    return dict(card.json())


def answer(client: TestClient, wid: str, gate: dict[str, Any], choice: str) -> None:
    body = {"payload": {"choice": choice, "rationale": "reviewed"}, "dedupeKey": f"merge-{choice}", "origin": "manual"}
    replied = client.post(f"/api/runs/{wid}/gates/{gate['gateKey']}/reply", json=body)
    assert replied.status_code == 200, replied.text


def executions(engine: sa.Engine, run_id: str) -> tuple[int, int]:
    """(sandbox attempts, ExecuteST step rows) of the run."""
    with engine.connect() as conn:
        attempts = conn.execute(sa.text("SELECT count(*) FROM app.sbx_runs WHERE run_id = :r"), {"r": run_id})
        rows = conn.execute(
            sa.text("SELECT count(*) FROM app.run_steps WHERE run_id = :r AND step_id = 'ExecuteST'"), {"r": run_id}
        )
        return int(attempts.scalar_one()), int(rows.scalar_one())


def test_the_merge_gate_shows_the_final_diff_and_yes_delivers_the_branch(
    client: TestClient, engine: sa.Engine, tmp_path: Path
) -> None:
    """Tests passed → parked at "merge?" with the diff on its card (API and console), no branch yet; "yes" →
    branch kodo/<runId> whose diff is the reviewed one, the tests not run again, the checkout untouched."""
    repo = make_repo(tmp_path / "repo")
    base, before = git(repo, "rev-parse", "HEAD").strip(), checkout_state(repo)
    wid = start(client, repo)
    gate = merge_gate(client, wid)
    assert gate["purpose"] == "merge" and gate["stepID"] == "DeliverST"
    assert gate["review"]["diff"]["files"] == [{"path": "calc.py", "added": 1, "removed": 1}]
    assert branches(repo) == ["main"]
    html = client.get(f"/runs/{wid}/view").text
    assert "Merge the change?" in html and '<tr class="diff-add">' in html and ">Merge</button>" in html
    run_id = client.get(f"/api/runs/{wid}").json()["runId"]
    ran = executions(engine, run_id)

    answer(client, wid, gate, "yes")
    done = wait_status(client, wid, {"SUCCESS", "ERROR"})
    assert done["status"] == "SUCCESS", done
    branch = f"kodo/{run_id}"
    assert branches(repo) == sorted(["main", branch])
    assert git(repo, "diff", "--binary", base, branch) == client.get(f"/api/runs/{wid}/diff").text
    assert git(repo, "show", f"{branch}:calc.py") == FIXED and checkout_state(repo) == before
    assert executions(engine, run_id) == ran == (1, 1)
    shown = client.get(f"/api/runs/{wid}/delivery").json()
    assert shown["status"] == "delivered" and shown["branch"] == branch


def test_no_at_the_merge_gate_delivers_nothing_and_restores_the_workspace(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    """ "no": MERGE_REJECTED, no branch, the source as it was, the workspace back at its base commit."""
    repo = make_repo(tmp_path / "repo")
    before = checkout_state(repo)
    wid = start(client, repo)
    answer(client, wid, merge_gate(client, wid), "no")
    done = wait_status(client, wid, {"SUCCESS", "ERROR"})
    assert done["status"] == "ERROR" and done["error"]["code"] == "MERGE_REJECTED", done
    assert branches(repo) == ["main"] and checkout_state(repo) == before
    workspace = settings.workspaces_dir / done["runId"]
    assert git(workspace, "status", "--porcelain") == "" and (workspace / "calc.py").read_text() == BUGGY
    assert client.get(f"/api/runs/{wid}/delivery").status_code == 404


def test_a_reply_without_a_decision_is_refused_and_writes_nothing(
    client: TestClient, engine: sa.Engine, tmp_path: Path
) -> None:
    """The merge gate takes a decision: a payload with none is a 400 and no row is written; the run still waits."""
    wid = start(client, make_repo(tmp_path / "repo"))
    gate = merge_gate(client, wid)
    with engine.connect() as conn:
        counts = table_counts(conn)
    body = {"payload": {"answer": "looks fine"}, "dedupeKey": "merge-note", "origin": "manual"}
    refused = client.post(f"/api/runs/{wid}/gates/{gate['gateKey']}/reply", json=body)
    assert refused.status_code == 400 and "takes a decision" in refused.text
    with engine.connect() as conn:
        assert table_counts(conn) == counts
    assert client.get(f"/api/runs/{wid}").json()["nextAction"] == "APPROVE_MERGE"


def test_an_unanswered_merge_gate_times_out_and_delivers_nothing(
    client: TestClient, engine: sa.Engine, tmp_path: Path
) -> None:
    """Nobody answers within the gate's TTL (planApprovalTimeoutS = 1): GATE_TIMEOUT, escalated once, no branch."""
    repo = make_repo(tmp_path / "repo")
    wid = start(client, repo, planApprovalTimeoutS=1)
    done = wait_status(client, wid, {"SUCCESS", "ERROR"})
    assert done["status"] == "ERROR" and done["error"]["code"] == "GATE_TIMEOUT", done
    assert "Merge approval timed out" in done["error"]["message"] and branches(repo) == ["main"]
    with engine.connect() as conn:
        (gate,) = conn.execute(sa.text("SELECT purpose, result FROM app.human_gates WHERE purpose = 'merge'")).all()
    assert gate.result["state"] == "TIMED_OUT"

    def escalations() -> int:
        with engine.connect() as conn:
            query = "SELECT count(*) FROM app.artifacts WHERE run_id = :r AND step_id = 'EscalateTimeout'"
            return int(conn.execute(sa.text(query), {"r": done["runId"]}).scalar_one())

    wait_until(lambda: escalations() == 1, timeout=30, what="the timed-out merge gate's escalation")


def test_a_bad_merge_gate_constraint_is_a_400_and_writes_nothing(
    client: TestClient, engine: sa.Engine, tmp_path: Path
) -> None:
    """mergeGate must be a boolean, and true only with deliver: otherwise 400 naming the rule, zero rows."""
    repo = str(make_repo(tmp_path / "repo"))
    with engine.connect() as conn:
        before = table_counts(conn)
    for constraints, rule in (
        ({"deliver": "branch", "mergeGate": "yes"}, "mergeGate must be true or false"),
        ({"mergeGate": True}, "mergeGate needs constraints.deliver"),
    ):
        refused = client.post("/api/intents", json={"goal": "g", "inputs": {"repo": repo}, "constraints": constraints})
        assert refused.status_code == 400 and rule in refused.text, refused.text
    with engine.connect() as conn:
        assert table_counts(conn) == before
