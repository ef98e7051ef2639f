"""The house checks run with the suite, so `uv run pytest` (and CI) enforce them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "command",
    [
        ("ruff", "check", "src", "tests"),
        ("ruff", "format", "--check", "src", "tests"),
        ("mypy",),
        ("lint-imports",),
    ],
    ids=["ruff", "ruff-format", "mypy-strict", "import-linter"],
)
def test_house_check_passes(command: tuple[str, ...]) -> None:
    """ruff, ruff format, mypy --strict on src/ and the import-linter layer contracts all pass."""
    result = _run(str(BIN / command[0]), *command[1:])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_modules_stay_under_600_lines() -> None:
    """No module in src/ grows past the 600-line hard limit (split by noun instead)."""
    too_long = {
        str(path.relative_to(ROOT)): count
        for path in (ROOT / "src").rglob("*.py")
        if (count := len(path.read_text().splitlines())) > 600
    }
    assert too_long == {}


def test_every_test_says_what_it_protects() -> None:
    """Every test function carries a one-line docstring."""
    import ast

    missing = []
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            is_test = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
            if is_test and not ast.get_docstring(node):
                missing.append(f"{path.relative_to(ROOT)}::{node.name}")
    assert missing == []
