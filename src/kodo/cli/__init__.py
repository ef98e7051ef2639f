"""``kodo``: the command line. It parses argv, builds Settings once and hands over to ``kodo.main``.

This module is the root group and the list of command groups, one module each (``kodo.cli.<group>``); what
they share is ``kodo.cli.context`` (settings, and the database and DBOS client of ``kodo.main.ops_context``).
Each group loads the heavy modules (DBOS, FastAPI) inside its commands, so ``kodo --help`` stays fast.
"""

from __future__ import annotations

import click

from kodo.cli.agent import agent
from kodo.cli.bench import bench, soak
from kodo.cli.bench_history import history
from kodo.cli.chaos import chaos
from kodo.cli.check import check
from kodo.cli.database import database
from kodo.cli.mcp import mcp_command
from kodo.cli.ops import ops
from kodo.cli.otlp import otlp
from kodo.cli.recipes import recipes
from kodo.cli.runs import runs
from kodo.cli.sandbox import sandbox
from kodo.cli.serve import api, up, worker
from kodo.cli.tenants import tenants
from kodo.cli.webhooks import webhooks


@click.group()
@click.version_option(package_name="kodo")
def cli() -> None:
    """kodo: a durable control plane for agentic coding runs."""


def main() -> None:
    cli()


cli.add_command(up)
cli.add_command(worker)
cli.add_command(api)
cli.add_command(database)
cli.add_command(agent)
cli.add_command(sandbox)
cli.add_command(ops)
cli.add_command(otlp)
cli.add_command(check)
cli.add_command(tenants)
cli.add_command(recipes)
cli.add_command(runs)
cli.add_command(chaos)
cli.add_command(webhooks)
cli.add_command(mcp_command)
cli.add_command(bench)
cli.add_command(soak)
bench.add_command(history)  # kodo bench history: its own module, a sub-group of kodo bench
