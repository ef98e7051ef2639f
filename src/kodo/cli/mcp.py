"""``kodo mcp``: serve kodo's MCP tools on stdio for a coding assistant (see docs/integrations.md)."""

from __future__ import annotations

import os
import sys

import click


@click.command("mcp")
@click.option(
    "--url",
    envvar="KODO_URL",
    default=None,
    help="kodo's base URL (env KODO_URL); default http://127.0.0.1:$PORT (3001).",
)
def mcp_command(url: str | None) -> None:
    """Serve the MCP tools on stdin/stdout. The bearer token, if kodo needs one, comes from KODO_TOKEN (never
    from the command line); its role decides which tools are offered."""
    import anyio

    from kodo.client import AsyncKodoClient
    from kodo.errors import KodoError
    from kodo.mcp_server import build_server, role_of

    base = url or f"http://127.0.0.1:{os.environ.get('PORT', '3001')}"
    token = os.environ.get("KODO_TOKEN") or None

    async def serve() -> None:
        async with AsyncKodoClient(base, token=token, timeout_s=60.0) as kodo:
            try:
                role = await role_of(kodo)
            except KodoError as error:
                click.echo(f"kodo mcp: cannot use kodo at {base}: {error.message}", err=True)
                sys.exit(1)
            await build_server(kodo, role).run_stdio_async()

    anyio.run(serve)
