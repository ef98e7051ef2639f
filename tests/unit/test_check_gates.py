"""``kodo check quick|check|full|all``: the runbooks' mise gates, as documented (issue #20 item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kodo.cli import cli
from kodo.cli.check import GATES, run_commands

RUNBOOK = Path(__file__).parents[2] / "docs" / "runbook.md"


@pytest.mark.parametrize("gate", ["quick", "check", "full"])
def test_each_gate_lists_the_commands_the_runbook_documents(gate: str) -> None:
    """`kodo check <gate> --list` prints commands, and the runbook's gate table names each of them for that gate."""
    listed = CliRunner().invoke(cli, ["check", gate, "--list"])
    assert listed.exit_code == 0, listed.output
    commands = listed.output.splitlines()
    assert commands and all(c.startswith("uv run ") for c in commands)
    row = next(line for line in RUNBOOK.read_text().splitlines() if line.startswith(f"| `mise run {gate}`"))
    for command in commands:
        assert f"`{command}`" in row, (command, row)
    assert f"`uv run kodo check {gate}`" in row


def test_all_is_quick_then_check_then_full() -> None:
    """The sign-off law quick && check && full is `kodo check all`, in that order."""
    assert GATES["all"] == GATES["quick"] + GATES["check"] + GATES["full"]


def test_a_gate_stops_at_the_first_failing_command_with_its_exit_code(tmp_path: Path) -> None:
    """Commands run in order as real subprocesses; the first failure's exit code is returned, later ones never run."""
    source = tmp_path / "a.txt"
    source.write_text("x")
    made = tmp_path / "later.zip"
    passing = ("passes", ["timeit", "-n", "1", "pass"])
    failing = ("fails", ["py_compile", str(tmp_path / "missing.py")])
    later = ("never runs", ["zipfile", "-c", str(made), str(source)])
    assert run_commands([passing, later], cwd=tmp_path) == 0 and made.exists()
    made.unlink()
    assert run_commands([passing, failing, later], cwd=tmp_path) == 1
    assert not made.exists()


def test_running_a_gate_outside_the_checkout_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kodo check quick` from a directory without pyproject.toml and tests/ says where to run it."""
    monkeypatch.chdir(tmp_path)
    refused = CliRunner().invoke(cli, ["check", "quick"])
    assert refused.exit_code == 1 and "from the kodo checkout" in refused.output
