"""The command line's shape: groups in modules of their own, light to load, no hidden imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "kodo"


def test_kodo_help_loads_neither_dbos_nor_fastapi() -> None:
    """`kodo --help` stays fast: importing the CLI loads no DBOS, FastAPI or uvicorn (commands load them when run)."""
    heavy = "('dbos', 'fastapi', 'uvicorn', 'kodo.main')"
    probe = f"import sys, kodo.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_no_import_module_of_our_own_modules() -> None:
    """No `importlib.import_module` anywhere in src/: every arrow between kodo's modules is visible to import-linter."""
    found = []
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "import_module":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


def test_every_command_group_is_registered_from_its_own_module() -> None:
    """Each top-level command lives in a module of its own under kodo/cli/ (bar the load tools still in the root)."""
    from kodo.cli import cli

    modules = {name: command.callback.__module__ for name, command in cli.commands.items() if command.callback}
    in_root = sorted(name for name, module in modules.items() if module == "kodo.cli")
    assert set(in_root) <= {"bench", "soak"}  # the load tools, on their way to kodo.cli.bench (issue #25)
    assert all(module.startswith("kodo.cli.") for name, module in modules.items() if name not in in_root)


def test_kodo_bench_offers_every_scenario_the_readme_names() -> None:
    """README: ``kodo bench burst|latency|api|hitl|ceiling|scale|history`` — each is a subcommand of kodo bench."""
    from kodo.cli import cli

    bench = cli.commands["bench"]
    assert isinstance(bench, click.Group)
    assert {"burst", "latency", "api", "hitl", "ceiling", "scale", "history"} <= set(bench.commands)
