"""The house checks run with the suite, so `uv run pytest` (and CI) enforce them."""

from __future__ import annotations

import ast
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


_BLOCKING_CALLS = {"transaction", "read", "connect", "begin"}


def _blocking_calls_on_the_loop(function: ast.AsyncFunctionDef) -> list[str]:
    """Database calls written directly in an ``async def`` (not in a nested sync function handed to a thread)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue  # a nested function runs where it is sent (run_in_threadpool), not here
            if isinstance(child, ast.With):
                for item in child.items:
                    call = item.context_expr
                    func = call.func if isinstance(call, ast.Call) else None
                    if isinstance(func, ast.Attribute) and func.attr in _BLOCKING_CALLS:
                        found.append(f"{function.name}:{child.lineno} with ….{func.attr}()")
            visit(child)

    visit(function)
    return found


def test_async_routes_keep_database_work_off_the_event_loop() -> None:
    """No ``async def`` in the API or console opens a database connection on the event loop (a commit or a
    lock wait there stalls every request of the process); such work goes through run_in_threadpool."""
    offenders = []
    for path in [*(ROOT / "src/kodo/api").rglob("*.py"), *(ROOT / "src/kodo/ui").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.AsyncFunctionDef):
                offenders += [f"{path.relative_to(ROOT)}: {hit}" for hit in _blocking_calls_on_the_loop(node)]
    assert offenders == []
