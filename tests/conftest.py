"""Shared fixtures: one embedded Postgres per session (each pytest-xdist process is one), one template clone per test.

* ``postgres_url`` — the session's server (``KODO_TEST_DATABASE_URL`` if set, else kodo's embedded one).
* ``database_url`` — a fresh database cloned from a template that already holds schemas ``app`` and ``dbos``.
* ``settings`` — Settings for that database, with ``KODO_HOME`` in the test's tmp dir.
* ``worker`` — a launched in-process DBOS worker (the monolith's worker half) on that database.
* ``client`` — an HTTP client on the monolith's API (in-process, ASGI).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from helpers import make_settings
from kodo import logs
from kodo.database import EmbeddedPostgres, libpq_url, with_database
from kodo.settings import Settings

TEMPLATE = "kodo_template"
# As every kodo entry point does: log lines on fd 2, never in a command's stdout; uncached, so capture_logs
# sees the events of loggers an earlier test used.
logs.configure("info", cache=False)


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(with_database(url, "postgres"), autocommit=True)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("KODO_TEST_DATABASE_URL")
    if external:
        yield libpq_url(external)
        return
    # Not under pytest's basetemp: a concurrent pytest session rotates old basetemps away.
    home = Path(tempfile.mkdtemp(prefix="kodo-test-pg-"))
    server = EmbeddedPostgres(home)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        url = server.start()
    try:
        yield url
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def template_url(postgres_url: str) -> str:
    """A template database migrated once: schemas ``app`` and ``dbos``, kodo's triggers and indexes on it."""
    from dbos import SQLAlchemyDatasource, run_dbos_database_migrations

    from kodo.database import sqlalchemy_url
    from kodo.store import completion_trigger, create_engine, dbos_indexes, queue_counts
    from kodo.store.migrate import migrate

    with _admin(postgres_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    url = with_database(postgres_url, TEMPLATE)
    engine = create_engine(url)
    migrate(engine)
    run_dbos_database_migrations(sqlalchemy_url(url))
    SQLAlchemyDatasource.migrate(sqlalchemy_url(url), schema="dbos")
    with engine.begin() as conn:  # as kodo.main.prepare_database does, after DBOS's tables exist
        completion_trigger.install(conn)
        queue_counts.install(conn)
        dbos_indexes.install(conn)
    engine.dispose()
    return url


@pytest.fixture
def database_url(template_url: str) -> Iterator[str]:
    name = "kodo_test_" + secrets.token_hex(6)
    with _admin(template_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(TEMPLATE)))
    try:
        yield with_database(template_url, name)
    finally:
        with _admin(template_url) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "home")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, so fixtures can act on failure (UI screenshots)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
