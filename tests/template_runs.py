"""Runs of a recipe whose deps a sandbox template installs: the recipe (fix calc.add, run its tests), a run of
it to its end, and what its one sandbox attempt answered (the template it booted, cold or warm)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from git_repos import fix_plan
from helpers import wait_status
from kodo.store import sandbox_runs


def fix_recipe(recipe_id: str, deps: list[str], test_command: str) -> dict[str, Any]:
    """A draft recipe that patches the repository's calc.add and runs ``test_command``, with ``deps``."""
    return {
        "id": recipe_id,
        "v": "v1",
        "name": recipe_id,
        "formSchema": {"type": "object", "properties": {"repo": {"type": "string"}, "plan": {"type": "array"}}},
        "intentTmpl": {
            "goal": "fix add with pytest",
            "inputs": {"repo": "{{formData.repo}}"},
            "constraints": {"testCommand": test_command, "patchPlan": "{{formData.plan}}"},
        },
        "wfEntry": "RunIntent",
        "queue": "intentQ",
        "limits": {"maxSteps": 8, "maxFanout": 2, "maxSbxMin": 5, "maxTokens": 100},
        "eval": [],
        "fixtures": [],
        "sandbox": {"envRef": "local-python-3.11", "deps": deps},
    }


def run_to_end(client: TestClient, recipe_id: str, repo: Path, partition: str) -> dict[str, Any]:
    """Start the recipe on ``repo`` (auto-approved) and wait for SUCCESS or ERROR; returns the run header."""
    payload = {
        "recipeRef": {"id": recipe_id, "v": "v1"},
        "formData": {"repo": str(repo), "plan": fix_plan()},
        "opts": {"queuePartitionKey": partition, "allowDraft": True, "autoApprove": True},
    }
    started = client.post("/api/run", json=payload)
    assert started.status_code == 201, started.text
    return wait_status(client, started.json()["workflowID"], {"SUCCESS", "ERROR"}, timeout=300)


def sandbox_response(engine: sa.Engine, run_id: str) -> dict[str, Any]:
    """The response of the run's one sandbox attempt (``app.sbx_runs``)."""
    with engine.connect() as conn:
        (row,) = sandbox_runs.list_for_run(conn, run_id)
    return dict(row["response"])
