"""``kodo soak hitl`` against a real ``kodo up``: bounded, loopback only, and it checks what it claims."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from processes import KodoProcess, clean_env, run_cli


def test_soak_hitl_parks_answers_and_verifies(spawn: Callable[..., KodoProcess]) -> None:
    """A small soak: runs park, duplicate bursts leave one ledger row per key, late repeats replay, all succeed."""
    up = spawn("up")
    result = run_cli(["soak", "hitl", "--n", "6", "--dupes", "3", "--timeout", "120"], up.env)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["parked"] == report["succeeded"] == 6 and report["errors"] == []
    assert report["replays"] == 6 * 2 and report["late_replays"] == 6
    assert report["ledger_rows_per_key_max"] == 1 and report["decisions_per_gate_max"] == 1
    assert set(report["reply_to_resume_ms"]) == {"p50", "p95", "p99", "max", "mean"}


def test_soak_refuses_targets_off_this_machine(database_url: str, tmp_path: Path) -> None:
    """The soak only talks to loopback: another host is refused before any request."""
    env = clean_env(DATABASE_URL=database_url, KODO_HOME=str(tmp_path / "home"))
    result = run_cli(["soak", "hitl", "--n", "1", "--base", "http://10.0.0.1:3001"], env)
    assert result.returncode != 0 and "loopback" in result.stderr
