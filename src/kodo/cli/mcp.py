"""``kodo mcp``: serve kodo's MCP tools to coding assistants, on stdio or streamable HTTP (docs/integrations.md)."""

from __future__ import annotations

import ipaddress
import os
import sys

import click


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command("mcp")
@click.option(
    "--url",
    envvar="KODO_URL",
    default=None,
    help="kodo's base URL (env KODO_URL); default http://127.0.0.1:$PORT (3001).",
)
@click.option("--http", "http_port", type=click.IntRange(1, 65535), default=None, help="Serve streamable HTTP here.")
@click.option("--host", default="127.0.0.1", show_default=True, help="With --http: the address to bind.")
def mcp_command(url: str | None, http_port: int | None, host: str) -> None:
    """Serve the MCP tools on stdin/stdout (default) or, with --http PORT, at http://HOST:PORT/mcp.

    On stdio the bearer token, if kodo needs one, comes from KODO_TOKEN (never from the command line) and
    its role decides which tools are offered. Over HTTP each request must carry a token kodo accepts
    (else 401), and every call is made with that caller's token."""
    import anyio

    from kodo.client import AsyncKodoClient
    from kodo.errors import AccessDenied, KodoError
    from kodo.mcp_server import build_server, http_app

    base = url or f"http://127.0.0.1:{os.environ.get('PORT', '3001')}"
    token = os.environ.get("KODO_TOKEN") or None

    async def identify() -> tuple[str, bool]:
        async with AsyncKodoClient(base, token=token, timeout_s=30.0) as kodo:
            who = await kodo.whoami()
            return who.role, who.authenticated

    try:
        role, authenticated = anyio.run(identify)
    except AccessDenied as error:
        if http_port is None:  # stdio needs a token of its own; over HTTP each caller brings one
            raise click.ClickException(f"kodo at {base} refused KODO_TOKEN: {error.message}") from error
        role, authenticated = "", True
    except KodoError as error:
        raise click.ClickException(f"cannot use kodo at {base}: {error.message}") from error
    if http_port is not None:
        import uvicorn

        if not authenticated and not _loopback(host):
            raise click.ClickException(f"--host {host}: kodo at {base} has no tokens, so serve loopback only")
        click.echo(f"kodo mcp: streamable HTTP on http://{host}:{http_port}/mcp (kodo at {base})", err=True)
        uvicorn.run(http_app(base, host=host), host=host, port=http_port, log_level="warning", access_log=False)
        return

    async def serve() -> None:
        async with AsyncKodoClient(base, token=token, timeout_s=60.0) as kodo:
            await build_server(kodo, role).run_stdio_async()

    anyio.run(serve)
    sys.exit(0)
