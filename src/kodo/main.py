"""The composition root: the only module that picks concrete adapters and wires processes together.

* ``monolith`` (``kodo up``): database + migrations + DBOS worker + API on ``PORT``.
* ``worker`` (``kodo worker``): DBOS launch and queues; ``/healthz`` on ``ADMIN_PORT``.
* ``api`` (``kodo api``): the shim; never launches DBOS, talks to workflows through ``DBOSClient`` + SQL.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog
import uvicorn
from dbos import (
    DBOS,
    DBOSClient,
    DBOSConfig,
    DBOSPortableJSONSerializer,
    SQLAlchemyDatasource,
    run_dbos_database_migrations,
)
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from kodo import faults, outages, sealing, telemetry
from kodo.access import parse as parse_tokens
from kodo.adapters.agent import CodingAgent
from kodo.adapters.agent.replay import ReplayAgent
from kodo.adapters.sandbox import Sandbox
from kodo.adapters.sandbox.mock import MockSandbox
from kodo.api import access, create_api, hygiene, metrics
from kodo.api.deps import ApiContext
from kodo.api.health import unhealthy
from kodo.api.observe import Observe
from kodo.api.run_changes import RunChanges
from kodo.database import resolve_database_url, sqlalchemy_url
from kodo.errors import ConfigurationError
from kodo.ops.context import Ops
from kodo.ops.executors import Heartbeat
from kodo.settings import Role, Settings
from kodo.store import completion_trigger, create_engine, dbos_indexes, executions, measurements, queue_counts
from kodo.store import webhooks as webhook_store
from kodo.store.async_connections import AsyncConnections
from kodo.store.migrate import migrate
from kodo.workflows import completions, outage_retry, runtime, webhooks
from kodo.workflows.queues import register_queues
from kodo.workflows.timers import ensure_schedule
from kodo.workflows.webhook_retention import ensure_retention_schedule

log = structlog.get_logger("kodo")
# Connections of a serving process's event-loop reads (the run header a polling client repeats): a few are enough,
# since each read holds one for a fraction of a millisecond; a request waits for a free one.
LOOP_READ_CONNECTIONS = 4


def build_agent(settings: Settings) -> CodingAgent:
    """``OC_MODE`` replay|record → fixtures and the producer; live → ``OC_PROVIDER`` opencode|openai."""
    if settings.oc_mode in {"replay", "record"}:
        return ReplayAgent(settings.home / "fixtures" / "agent", record=settings.oc_mode == "record")
    if settings.oc_provider == "openai":
        from kodo.adapters.agent.openai import OpenAICompatibleAgent

        key = settings.openai_api_key
        return OpenAICompatibleAgent(
            settings.openai_base_url,
            model=settings.openai_model,
            api_key=key.get_secret_value() if key else None,
            timeout_ms=settings.oc_timeout_ms,
            strict=settings.oc_strict_mode,
            max_output_tokens=settings.agent_max_output_tokens,
        )
    from kodo.adapters.agent.opencode import OpenCodeAgent

    password = settings.opencode_server_password
    return OpenCodeAgent(
        settings.agent_base_url,
        password=password.get_secret_value() if password else None,
        timeout_ms=settings.oc_timeout_ms,
        strict=settings.oc_strict_mode,
        workspaces_dir=settings.workspaces_dir,
    )


class MockResultBook:
    """The mock sandbox's idempotency store, ``app.mock_sandbox_results`` (each call its own transaction, waiting
    out a database outage like a step's own writes: ``KODO_DB_OUTAGE_MAX_SEC``)."""

    def __init__(self, engine: sa.Engine, outage_max_sec: float) -> None:
        self.engine = engine
        self.outage_max_sec = outage_max_sec

    def keep(self, idempotency_key: str, execution_id: str, document: dict[str, Any]) -> None:
        def write() -> None:
            with self.engine.begin() as conn:
                executions.keep_mock_result(conn, idempotency_key, execution_id, document)

        outages.wait_out(write, max_sec=self.outage_max_sec, what="mock sandbox keep")

    def find(self, idempotency_key: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            with self.engine.begin() as conn:
                return executions.find_mock_result(conn, idempotency_key)

        return outages.wait_out(read, max_sec=self.outage_max_sec, what="mock sandbox find")


def build_sandbox(settings: Settings, engine: sa.Engine | None = None) -> Sandbox:
    """``SBX_MODE`` mock → the magic-command mock (keeping results in ``engine``'s database when given);
    live → ``SBX_PROVIDER`` local|e2b (microsandbox: refused)."""
    if settings.sbx_mode == "mock":
        return MockSandbox(MockResultBook(engine, settings.db_outage_max_sec) if engine is not None else None)
    if settings.sbx_provider == "local":
        from kodo.adapters.sandbox.local import LocalSandbox, SandboxLimits

        if settings.sbx_default_net:
            raise ConfigurationError(
                "SBX_DEFAULT_NET=true is refused with SBX_PROVIDER=local: the sandbox would share the host's "
                "loopback, where kodo's API and Postgres listen; use SBX_PROVIDER=e2b for tasks that need the network"
            )
        limits = SandboxLimits(
            processes=settings.sbx_max_processes,
            file_mb=settings.sbx_max_file_mb,
            tmp_mb=settings.sbx_tmp_mb,
            workspace_growth_mb=settings.sbx_workspace_growth_mb,
        )
        local = LocalSandbox(limits=limits)
        if local.isolation != "bwrap" and not settings.sbx_allow_unisolated:
            raise ConfigurationError(
                "SBX_PROVIDER=local needs a working bubblewrap (bwrap) to isolate commands: install it "
                "(apt-get install bubblewrap) and allow unprivileged user namespaces, or set SBX_ALLOW_UNISOLATED=true "
                "to run commands unisolated as the kodo user"
            )
        return local
    if settings.sbx_provider == "e2b":
        from kodo.adapters.sandbox.e2b import E2BSandbox
        from kodo.adapters.sandbox.e2b_workspace import WorkspaceLimits

        key = settings.e2b_api_key
        bounds = WorkspaceLimits(
            upload_max_bytes=settings.sbx_e2b_upload_max_mb << 20,
            files_out_max_count=settings.sbx_e2b_files_out_max_count,
            files_out_max_bytes=settings.sbx_e2b_files_out_max_mb << 20,
        )
        return E2BSandbox(
            key.get_secret_value() if key else None,
            api_url=settings.e2b_api_url,
            sandbox_url=settings.e2b_sandbox_url,
            limits=bounds,
        )
    raise ConfigurationError(
        f"SBX_PROVIDER={settings.sbx_provider} is not supported by kodo; use SBX_PROVIDER=local or SBX_PROVIDER=e2b"
    )


def prepare_database(settings: Settings, role: Role | None = None) -> tuple[str, sa.Engine]:
    """Resolve (or start) the database, apply kodo's migrations and DBOS's; returns (url, engine). The
    engine's connections carry ``kodo-<role>`` as application name (``pg_stat_activity`` tells a worker's
    sessions from an API's)."""
    url = resolve_database_url(settings.database_url, settings.home)
    engine = engine_for(settings, url, "kodo" if role is None else f"kodo-{role}")
    migrate_database(settings, url, engine)
    return url, engine


def engine_for(settings: Settings, url: str, application_name: str) -> sa.Engine:
    """One of a process's engines: ``KODO_DB_POOL_SIZE`` connections (and as many in overflow), named
    ``application_name`` in ``pg_stat_activity``."""
    return create_engine(url, pool_size=settings.db_pool_size, application_name=application_name)


def migrate_database(settings: Settings, url: str, engine: sa.Engine) -> None:
    """Apply kodo's migrations (schema ``app``) and DBOS's (schema ``dbos``), then the completion trigger."""
    migrate(engine)
    with engine.begin() as conn:  # secrets sealed (pre-0016 rows) or moved to the newest key before serving
        webhook_store.reseal_secrets(conn, functools.partial(sealing.current, settings))
    run_dbos_database_migrations(sqlalchemy_url(url))
    with engine.begin() as conn:  # needs DBOS's tables, so after its migrations
        completion_trigger.install(conn)
        queue_counts.install(conn)
        queue_counts.compact(conn)
        dbos_indexes.install(conn)


@contextlib.contextmanager
def ops_context(settings: Settings, *, migrated: bool = False) -> Iterator[Ops]:
    """What one command outside a server process needs (every ``kodo`` CLI command that touches the database):
    an engine on the resolved database (migrated first when ``migrated``) and a DBOS client on it, built once
    here and released at the end. The client connects on first use, so a command that only runs SQL pays
    nothing for it, and it raises on a lost connection instead of waiting (an operator sees the outage)."""
    url = resolve_database_url(settings.database_url, settings.home)
    engine = create_engine(url, pool_size=4, application_name="kodo-cli")
    try:
        if migrated:
            migrate_database(settings, url, engine)
        client = dbos_client(settings, engine, lazy=True)
        try:
            yield Ops(engine=engine, client=client, settings=settings)
        finally:
            client.destroy()
    finally:
        engine.dispose()


def dbos_config(settings: Settings, url: str, role: Role) -> DBOSConfig:
    return {
        "name": settings.app_name,
        "system_database_url": sqlalchemy_url(url),
        "application_version": settings.app_version,
        "executor_id": settings.executor_for(role),
        "serializer": DBOSPortableJSONSerializer(),
        "max_executor_threads": settings.max_executor_threads,
        "notification_listener_polling_interval_sec": 0.1,
        "scheduler_polling_interval_sec": 5.0,
        "sys_db_pool_size": 20,
        # No ping before each checkout: one round trip saved per DBOS system-database transaction
        # (the embedded Postgres is local; a dropped connection fails its transaction, which DBOS retries).
        "db_engine_kwargs": {"pool_pre_ping": False, "connect_args": {"application_name": "dbos_transact"}},
        "log_level": "WARNING" if settings.log_level in {"info", "debug"} else settings.log_level.upper(),
        # Spans go through the process's tracer provider, whose exporters kodo.telemetry sets up; handing
        # DBOS the endpoints too would export every span twice.
        "enable_otlp": settings.dbos_enable_otlp,
        "otlp_traces_endpoints": [],
        "otlp_logs_endpoints": settings.otlp_logs_endpoints if settings.dbos_enable_otlp else [],
    }


def dbos_client(
    settings: Settings, engine: sa.Engine, *, wait_out_outages: bool = False, lazy: bool = False
) -> DBOSClient:
    """A DBOS client on ``engine``. Only a workflow's own client waits out an outage (DBOS's retry); the API's
    and the heartbeat's raise at once, so a request answers 503 and a background round fails and is retried.
    A ``lazy`` client connects on its first use instead of at once."""
    return DBOSClient(
        system_database_engine=engine,
        serializer=DBOSPortableJSONSerializer(),
        application_name=settings.app_name,
        retry_connection_errors=wait_out_outages,
        lazy=lazy,
    )


@dataclass
class Worker:
    """A launched DBOS worker and what it holds."""

    engine: sa.Engine
    datasource: SQLAlchemyDatasource
    heartbeat: Heartbeat | None = None
    listener: completions.Completions | None = None
    dispatcher: webhooks.Dispatcher | None = None

    def stop(self) -> None:
        outages.abandon_waits()  # a step waiting out an outage gives up now: this worker no longer runs it
        outage_retry.retire_executor_threads()  # and DBOS's own retries in its threads stop retrying
        if self.dispatcher is not None:
            self.dispatcher.stop()
            self.dispatcher.client.destroy()
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat.client.destroy()
        if self.listener is not None:  # wakes its waiters: a fan-out still running polls from here on
            completions.install(None)
            self.listener.stop()
        telemetry.flush()  # DBOS.destroy does not flush the batch span processor
        DBOS.destroy()
        with contextlib.suppress(RuntimeError):  # not installed: nothing to release
            runtime.services().client.destroy()
        runtime.install(None)
        self.datasource.engine.dispose()


def launch_worker(settings: Settings, url: str, engine: sa.Engine, role: Role) -> Worker:
    """Install services, launch DBOS and register the queues."""
    import kodo.workflows  # noqa: F401 - registers every workflow before launch

    faults.arm(settings.fault_points)
    telemetry.configure(settings)
    outage_retry.install(settings.db_outage_max_sec)  # DBOS waits out a Postgres outage (issue #26)
    DBOS(config=dbos_config(settings, url, role))
    # Created after DBOS(...) and before launch: DBOS registers every datasource with its instance. Its step
    # transactions get a pool of their own: a step holding one takes another from ``engine`` beside it (its
    # write-ahead ledger, its reads), and with one pool enough steps at once held every connection, each
    # waiting for a second (a 30 s stall, then the step failed).
    steps = engine_for(settings, url, f"kodo-{role}-steps")
    datasource = SQLAlchemyDatasource.create(
        sqlalchemy_url(url), engine=steps, serializer=DBOSPortableJSONSerializer(), schema="dbos"
    )
    runtime.install(
        runtime.Services(
            settings=settings,
            engine=engine,
            datasource=datasource,
            client=dbos_client(settings, engine, wait_out_outages=True),
            agent=build_agent(settings),
            sandbox=build_sandbox(settings, engine),
        )
    )
    # Heartbeat in app.executors + the bid for dead-executor recovery leadership (kodo.ops.executors).
    # Registered before launch: a restarted executor is alive again before DBOS recovers its own work.
    heartbeat = Heartbeat(
        engine,
        dbos_client(settings, engine),
        settings,
        executor_id=settings.executor_for(role),
        role=role,
        live=outage_retry.live_workflow_ids,
    )
    heartbeat.register()
    # LISTEN kodo_workflow_done before launch: a recovered parent's fan-out is woken by its children too.
    listener = completions.Completions(url).start()
    completions.install(listener)
    DBOS.launch()
    register_queues(settings)
    ensure_schedule(settings)
    ensure_retention_schedule(settings)
    heartbeat.start()
    # Webhook outbox → deliveries (kodo.workflows.webhooks): after the queues exist, so nothing waits on one.
    dispatcher = webhooks.Dispatcher(engine, dbos_client(settings, engine), settings, url).start()
    log.info("worker launched", executor=settings.executor_for(role), app_version=settings.app_version)
    return Worker(engine=engine, datasource=datasource, heartbeat=heartbeat, listener=listener, dispatcher=dispatcher)


@contextlib.contextmanager
def running(settings: Settings, role: Role, *, api: bool = True) -> Iterator[FastAPI]:
    """Everything one process needs, started; yields the HTTP app it serves (``api=False``: the monolith's
    worker half, whose API runs in processes of its own, serves what a worker serves)."""
    faults.arm(settings.fault_points)
    telemetry.configure(settings)
    url, engine = prepare_database(settings, role)
    worker = launch_worker(settings, url, engine, role) if role in {"monolith", "worker"} else None
    serves_api = role != "worker" and api
    # Beside a worker (`kodo up --api-processes 0`) the API has a pool of its own, as an API process has: a
    # request waiting on a step's uncommitted row (a replayed start waits for the run's first step) must not
    # hold the connection that step needs for its write-ahead commit (all of them, it stalled the step 30 s).
    api_engine = engine_for(settings, url, f"kodo-{role}-api") if serves_api and worker is not None else engine
    client = dbos_client(settings, api_engine)
    # LISTEN kodo_run_changed: long-polls and event streams wake on a run's change instead of a timer.
    changes = RunChanges(url, application_name=f"kodo-{role}-changes").start() if serves_api else None
    loop_reads = (
        AsyncConnections(url, size=LOOP_READ_CONNECTIONS, application_name=f"kodo-{role}-reads") if serves_api else None
    )
    try:
        if not serves_api:
            yield admin_app(settings, engine, role)
        else:
            yield create_app(
                ApiContext(
                    settings=settings,
                    engine=api_engine,
                    client=client,
                    role=role,
                    changes=changes,
                    loop_reads=loop_reads,
                )
            )
    finally:
        if loop_reads is not None:
            loop_reads.close()
        if changes is not None:
            changes.stop()
        client.destroy()
        if worker is not None:
            worker.stop()
        telemetry.flush()
        if api_engine is not engine:
            api_engine.dispose()
        engine.dispose()


def create_app(context: ApiContext) -> FastAPI:
    """The API plus the web console, as one app."""
    from kodo import ui

    app = create_api(context)
    ui.install(app)
    return app


def admin_app(settings: Settings, engine: sa.Engine, role: Role = "worker") -> FastAPI:
    """The worker's own small HTTP surface: ``/healthz`` (open) and ``/metrics`` (a token when tokens are set)."""
    app = FastAPI(title="kodo worker", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.metrics = metrics.build(engine)
    app.include_router(metrics.router)

    @app.get("/healthz")
    @access.public
    def healthz() -> JSONResponse:
        try:
            with engine.connect() as conn:
                measurements.ping(conn)
        except Exception as error:
            return unhealthy(error)
        return JSONResponse(
            {
                "ok": True,
                "role": role,
                "appVersion": settings.app_version,
                "executorId": settings.executor_for(role),
                "pid": os.getpid(),
                **({"unisolatedSandboxAllowed": True} if settings.unisolated_allowed else {}),
            }
        )

    access.install(app, engine=engine, tokens=parse_tokens(settings.api_tokens), max_body=settings.max_body_bytes)
    hygiene.install(app, settings)
    app.add_middleware(Observe, metrics=app.state.metrics, tracing=settings.dbos_enable_otlp)
    return app


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Without ``KODO_API_TOKENS`` kodo has no authentication, so it serves loopback only."""
    if settings.api_tokens is None and not is_loopback(settings.host):
        raise ConfigurationError(
            f"KODO_HOST={settings.host} is not a loopback address: set KODO_API_TOKENS (bearer tokens) to serve "
            "beyond this machine, or bind KODO_HOST=127.0.0.1"
        )
    parse_tokens(settings.api_tokens)  # a broken token table fails here, before anything starts


def serve(settings: Settings, role: Role, *, api: bool = True) -> None:
    """Run one process until it is told to stop (``api=False``: without the API, on ADMIN_PORT)."""
    # uvicorn re-raises SIGTERM once it has shut down; with the default action that would kill the process
    # before its cleanup (DBOS, sibling processes) runs. Turned into SystemExit, every ``finally`` runs.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    port = settings.admin_port if role == "worker" or not api else settings.port
    check_exposure(settings)
    with running(settings, role, api=api) as app:
        if settings.api_tokens is None:
            log.warning("no KODO_API_TOKENS: no authentication, serving on loopback only", host=settings.host)
        else:
            log.info("bearer tokens required on every route but /healthz", tokens="KODO_API_TOKENS")
        if settings.allowed_hosts is None and not is_loopback(settings.host):
            log.warning(
                "KODO_ALLOWED_HOSTS is unset: requests must name one of these hosts (else 400)",
                hosts=sorted(settings.host_names),
            )
        log.info("serving", role=role, host=settings.host, port=port, reuse_port=settings.reuse_port)
        if settings.reuse_port and role == "api":
            config = uvicorn.Config(app, log_level="warning", access_log=False)
            uvicorn.Server(config).run(sockets=[shared_socket(settings.host, port)])
        else:
            uvicorn.run(app, host=settings.host, port=port, log_level="warning", access_log=False)


def die_with_parent() -> None:
    """In a child process before it runs (``preexec_fn``): the kernel kills it when its parent dies, so a
    kill -9 of ``kodo up`` leaves no API or worker process behind (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def share_fate(processes: list[subprocess.Popen[bytes]]) -> threading.Event:
    """Watch ``processes`` (``kodo up``'s API processes) from a daemon thread: if one ends while this process
    is not stopping, this process ends the same way (killed → killed, else a graceful stop), so ``kodo up``
    crashes and restarts as one unit, as it did in one process. Set the returned event before stopping them."""
    stopping = threading.Event()

    def watch() -> None:
        while not stopping.wait(0.2):
            for process in processes:
                code = process.poll()
                if code is None or stopping.is_set():
                    continue
                log.error("an API process of kodo up ended: kodo up ends too", pid=process.pid, code=code)
                os.kill(os.getpid(), signal.SIGKILL if code == -signal.SIGKILL else signal.SIGTERM)
                return

    threading.Thread(target=watch, name="kodo-share-fate", daemon=True).start()
    return stopping


def _exit_on_signal(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def shared_socket(host: str, port: int) -> socket.socket:
    """A listening socket that sibling processes bind too (SO_REUSEPORT): the kernel balances connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY on TCP only
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock
