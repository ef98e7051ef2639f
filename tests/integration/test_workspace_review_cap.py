"""The gate card's size cap: past ``REVIEW_DIFF_MAX_LINES`` the card stops and links to the full diff artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from git_repos import TEST_COMMAND, make_repo
from helpers import make_settings, wait_status
from kodo.settings import Settings

LINES = 40


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "home", REVIEW_DIFF_MAX_LINES="10", KODO_REPO_ROOTS=str(tmp_path))


def test_a_long_diff_is_cut_on_the_card_and_the_link_serves_all_of_it(client: TestClient, tmp_path: Path) -> None:
    """A 40-line new file and a one-line fix: the card shows 10 lines, says it is cut, links the full artifact."""
    repo = make_repo(tmp_path / "repo")
    big = "".join(f"line {n}\n" for n in range(LINES))
    plan: list[dict[str, Any]] = [
        {"targetPath": "calc.py", "postimageContent": "def add(a, b):\n    return a + b\n"},
        {"targetPath": "notes/big.txt", "postimageContent": big},
    ]
    constraints = {"testCommand": TEST_COMMAND, "patchPlan": plan}
    intent = client.post(
        "/api/intents", json={"goal": "cap", "inputs": {"repo": str(repo)}, "constraints": constraints}
    )
    wid = intent.json()["intentId"]
    assert client.post("/api/runs", json={"intentId": wid, "queuePartitionKey": "cap"}).status_code == 201
    wait_status(client, wid, {"WAITING_INPUT"})
    (gate,) = client.get(f"/api/runs/{wid}/gates").json()
    diff = client.get(f"/api/runs/{wid}/gates/{gate['gateKey']}").json()["review"]["diff"]
    assert diff["truncated"] is True and diff["maxLines"] == 10
    assert [f["path"] for f in diff["files"]] == ["calc.py", "notes/big.txt"]  # the new file is in the diff
    assert diff["files"][1]["added"] == LINES
    assert sum(len(f["lines"]) for f in diff["shown"]) == 10
    html = client.get(f"/runs/{wid}/view").text
    assert "The diff is longer than 10 lines" in html and f'href="{diff["artifactUrl"]}"' in html
    full = client.get(diff["artifactUrl"]).text
    assert full.count("\n+line ") == LINES and full == client.get(f"/api/runs/{wid}/diff").text
