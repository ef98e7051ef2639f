"""``kodo up | worker | api``: the server processes, each with any number of siblings of its kind."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import click

from kodo.cli.context import clean_errors, command_settings
from kodo.settings import Settings


def _serve(role: str, *, api: bool = True) -> None:
    from kodo import logs, main

    settings = command_settings()
    logs.configure(settings.log_level)
    with clean_errors():
        main.serve(settings, role, api=api)  # type: ignore[arg-type]


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
    settings = command_settings()
    from kodo.database import resolve_database_url
    from kodo.main import die_with_parent, prepare_database, share_fate

    url = resolve_database_url(settings.database_url, settings.home)  # started once, before the children
    if apis:
        with clean_errors():
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


@click.command()
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


@click.command()
@click.option("--processes", type=_COUNT, default=1, show_default=True, help="Workers (own executor id, ADMIN_PORT+i).")
def worker(processes: int) -> None:
    """Start a DBOS worker (queues, workflows); /healthz on ADMIN_PORT."""
    _with_siblings("worker", "worker", processes - 1, _worker_env)


@click.command()
@click.option("--processes", type=_COUNT, default=1, show_default=True, help="API processes on one PORT (reuseport).")
def api(processes: int) -> None:
    """Start the API shim on PORT: enqueues and reads through DBOSClient, never runs workflows."""
    if processes > 1:
        os.environ["KODO_REUSE_PORT"] = "1"
    _with_siblings("api", "api", processes - 1, lambda _settings, _index: {})
