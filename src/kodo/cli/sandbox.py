"""``kodo sbx smoke`` (the live sandbox: a command and a network probe) and ``kodo sbx template register``."""

from __future__ import annotations

import sys

import click

from kodo.cli.context import clean_errors, command_settings, ops_context


@click.group("sbx")
def sandbox() -> None:
    """The sandbox: check the configured live provider (SBX_PROVIDER)."""


@sandbox.command("smoke")
def sandbox_smoke() -> None:
    """Run `echo ok` and a network probe (a connection must fail without net) in the live sandbox."""
    import socket
    import tempfile

    from kodo.adapters.sandbox import SandboxRequest
    from kodo.main import build_sandbox

    settings = command_settings().model_copy(update={"sbx_mode": "live"})
    with clean_errors():
        live = build_sandbox(settings)
    posture = getattr(live, "posture", None)
    click.echo(f"provider={live.provider} posture={posture() if callable(posture) else 'unknown'}")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="kodo-sbx-smoke-") as workspace, socket.socket() as listener:
        result = live.run(SandboxRequest(task_key="smoke-echo", cmd="echo ok", workdir=workspace, timeout_ms=60_000))
        good = result.err_code == "NONE" and result.stdout.strip() == "ok"
        failures += not good
        click.echo(
            f"{'OK' if good else 'FAIL'} echo: errCode={result.err_code} wallMs={result.wall_ms} {result.stderr}"
        )
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        probe = f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"
        result = live.run(SandboxRequest(task_key="smoke-net", cmd=probe, workdir=workspace, timeout_ms=60_000))
        blocked = result.err_code != "NONE" and "connected" not in result.stdout
        failures += not blocked
        verdict = "blocked (isolated)" if blocked else "connected: NOT isolated"
        click.echo(f"{'OK' if blocked else 'FAIL'} network without net: {verdict}")
    sys.exit(1 if failures else 0)


@sandbox.group("template")
def sandbox_template() -> None:
    """Sandbox templates, keyed by (recipe id, v, deps hash)."""


@sandbox_template.command("register")
@click.argument("ref")
@click.option("--template-id", required=True, help="The provider's template (image) id.")
@click.option("--boot-ms", type=click.IntRange(0, None), default=None, help="Measured boot time of the template.")
def sandbox_template_register(ref: str, template_id: str, boot_ms: int | None) -> None:
    """Register ID@V's sandbox template: its runs resolve hot from now on (a different id for the key: refused)."""
    from kodo.workflows import recipes as recipe_flows
    from kodo.workflows import templates

    recipe_id, v = recipe_flows.parse_ref(ref)
    with ops_context(migrated=True) as context, context.engine.begin() as conn:
        row, created = templates.register(conn, recipe_id, v, template_id, boot_ms=boot_ms, by="cli")
    click.echo(f"{row.template_key}\t{row.template_id}\t{'registered' if created else 'already registered'}")
