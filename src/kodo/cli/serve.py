"""``kodo up | worker | api``: the server processes, each with any number of siblings of its kind."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import click

from kodo.cli.context import clean_errors, command_settings
from kodo.settings import Settings


def _serve(role: str) -> None:
    from kodo import logs, main

    settings = command_settings()
    logs.configure(settings.log_level)
    with clean_errors():
        main.serve(settings, role)  # type: ignore[arg-type]


def _worker_env(settings: Settings, index: int) -> dict[str, str]:
    """An extra worker's own executor id and admin port."""
    return {"DBOS__VMID": f"{settings.executor_for('worker')}-{index}", "ADMIN_PORT": str(settings.admin_port + index)}


def _with_siblings(role: str, sibling: str, extra: int, env_for: Callable[[Settings, int], dict[str, str]]) -> None:
    """Serve ``role`` here and ``extra`` ``kodo <sibling>`` processes beside it (``env_for(settings, i)``
    adds to each one's environment), on the database this process resolved; stopped by PID with it."""
    import signal
    import subprocess

    if extra == 0:
        _serve(role)
        return
    settings = command_settings()
    from kodo.database import resolve_database_url

    url = resolve_database_url(settings.database_url, settings.home)  # started once, before the children
    children = []
    for index in range(1, extra + 1):
        env = {**os.environ, "DATABASE_URL": url, **env_for(settings, index)}
        children.append(subprocess.Popen([sys.executable, "-m", "kodo", sibling], env=env))
    try:
        _serve(role)
    finally:
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
def up(workers: int) -> None:
    """Start everything in one process: embedded Postgres (if no DATABASE_URL), worker and API on PORT."""
    _with_siblings("monolith", "worker", workers - 1, _worker_env)


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
