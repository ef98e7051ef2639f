"""``kodo check quick|check|full``: the predecessor runbooks' ``mise run quick|check|full`` gates.

Each gate is a fixed list of commands run in order from the kodo checkout with this Python; the first
failing command stops the gate and its exit code is kodo's. ``--list`` prints the commands instead.
The runbooks' sign-off law ``quick && check && full`` is ``kodo check all``.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click

# (what it checks, the command after ``python -m``), per gate, as documented in docs/runbook.md.
GATES: dict[str, list[tuple[str, list[str]]]] = {
    "quick": [
        ("lint", ["ruff", "check", "src", "tests"]),
        ("format", ["ruff", "format", "--check", "src", "tests"]),
        ("types", ["mypy"]),
        ("unit + policy (import layers, module size)", ["pytest", "-q", "tests/unit"]),
    ],
    "check": [("integration, workflow, contract", ["pytest", "-q", "tests/integration", "tests/contract"])],
    "full": [("end to end: kodo up/worker/api, kill -9, soak, bench", ["pytest", "-q", "tests/e2e"])],
}
GATES["all"] = GATES["quick"] + GATES["check"] + GATES["full"]


def shown(command: Sequence[str]) -> str:
    """A gate command as an operator types it."""
    return "uv run " + shlex.join(command)


def run_commands(commands: Sequence[tuple[str, Sequence[str]]], *, cwd: Path) -> int:
    """Run each ``python -m <command>`` in order; the first non-zero exit code stops and is returned."""
    for label, command in commands:
        click.echo(f"==> {label}: {shown(command)}", err=True)
        began = time.monotonic()
        code = subprocess.run([sys.executable, "-m", *command], cwd=cwd, check=False).returncode
        verdict = "ok" if code == 0 else f"FAILED (exit {code})"
        click.echo(f"<== {label}: {verdict} in {time.monotonic() - began:.1f}s", err=True)
        if code != 0:
            return code
    return 0


@click.command("check")
@click.argument("gate", type=click.Choice(sorted(GATES)))
@click.option("--list", "list_only", is_flag=True, help="Print the gate's commands instead of running them.")
def check(gate: str, list_only: bool) -> None:
    """Run a gate from the kodo checkout: quick (lint, format, types, unit), check (integration, contract),
    full (end to end) or all (quick && check && full)."""
    if list_only:
        for _label, command in GATES[gate]:
            click.echo(shown(command))
        return
    root = Path.cwd()
    if not (root / "pyproject.toml").is_file() or not (root / "tests").is_dir():
        raise click.ClickException("run kodo check from the kodo checkout (where pyproject.toml and tests/ are)")
    sys.exit(run_commands(GATES[gate], cwd=root))
