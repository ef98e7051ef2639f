"""``kodo agent smoke``: one structured plan call against the live coding agent (``OC_PROVIDER``)."""

from __future__ import annotations

import sys

import click

from kodo.cli.context import clean_errors, command_settings


@click.group()
def agent() -> None:
    """The coding agent: check the configured live provider (OC_PROVIDER)."""


@agent.command("smoke")
@click.option("--goal", default="Add a health check endpoint", show_default=True, help="The goal to plan.")
def agent_smoke(goal: str) -> None:
    """One structured plan call against the live agent; prints the answer and its timing, exits 1 on failure."""
    import json
    import secrets
    import time

    from kodo.adapters.agent import PLAN_SCHEMA, AgentRequest
    from kodo.main import build_agent

    settings = command_settings().model_copy(update={"oc_mode": "live", "oc_strict_mode": True})
    with clean_errors():
        live = build_agent(settings)
    request = AgentRequest(
        run_id="run_smoke_" + secrets.token_hex(6),
        step_id="CompileST",
        attempt=1,
        agent="plan",
        prompt=f"Goal: {goal}\nReturn ONLY JSON per schema. No code, no patches.",
        schema=PLAN_SCHEMA,
        context={"intent": {"goal": goal, "inputs": {}, "constraints": {}}, "workload": None},
    )
    started = time.monotonic()
    try:
        result = live.structured(request)
    except Exception as error:
        elapsed = int((time.monotonic() - started) * 1000)
        click.echo(f"FAIL provider={settings.oc_provider} after {elapsed} ms: {error}", err=True)
        sys.exit(1)
    elapsed = int((time.monotonic() - started) * 1000)
    click.echo(f"OK provider={settings.oc_provider} in {elapsed} ms session={result.session_id or '-'}")
    click.echo(json.dumps(result.structured, indent=2, ensure_ascii=False))
