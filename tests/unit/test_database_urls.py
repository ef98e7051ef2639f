"""Database URL helpers (pure string functions in kodo.database)."""

from __future__ import annotations

import pytest

from kodo.database import database_name, libpq_url, sqlalchemy_url, with_database
from kodo.errors import ConfigurationError

SOCKET = "postgresql://postgres@/kodo?host=/tmp/x/pg"
TCP = "postgresql://u:p@localhost:5432/app"


def test_sqlalchemy_url_names_the_psycopg_driver() -> None:
    """SQLAlchemy URLs use postgresql+psycopg:// and keep everything else."""
    assert sqlalchemy_url(SOCKET) == "postgresql+psycopg://postgres@/kodo?host=/tmp/x/pg"
    assert sqlalchemy_url(TCP) == "postgresql+psycopg://u:p@localhost:5432/app"


@pytest.mark.parametrize("url", ["postgres://u:p@localhost:5432/app", "postgresql+psycopg://u:p@localhost:5432/app"])
def test_sqlalchemy_url_accepts_every_postgres_scheme(url: str) -> None:
    """postgres:// and an already-converted URL both come out as postgresql+psycopg://."""
    assert sqlalchemy_url(url) == "postgresql+psycopg://u:p@localhost:5432/app"


@pytest.mark.parametrize(
    "url", ["mysql://u:p@localhost/app", "sqlite:///tmp/x.db", "localhost:5432/app", "", "postgresql+asyncpg://h/db"]
)
def test_non_postgres_url_raises_configuration_error(url: str) -> None:
    """A URL that is not PostgreSQL stops start-up with an error naming DATABASE_URL."""
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        sqlalchemy_url(url)


def test_libpq_url() -> None:
    """libpq URLs use postgresql:// whatever scheme came in."""
    assert libpq_url(SOCKET) == SOCKET
    assert libpq_url(TCP) == TCP
    assert libpq_url("postgresql+psycopg://u:p@localhost:5432/app") == TCP
    assert libpq_url("postgres://u:p@localhost:5432/app") == TCP


def test_libpq_and_sqlalchemy_round_trip() -> None:
    """Converting to SQLAlchemy form and back gives the libpq URL again."""
    for url in (SOCKET, TCP):
        assert libpq_url(sqlalchemy_url(url)) == url


def test_with_database_on_socket_url_keeps_the_query() -> None:
    """Swapping the database of a Unix-socket URL keeps ?host=..."""
    assert with_database(SOCKET, "postgres") == "postgresql://postgres@/postgres?host=/tmp/x/pg"
    assert with_database(SOCKET, "kodo_test_1") == "postgresql://postgres@/kodo_test_1?host=/tmp/x/pg"


def test_with_database_on_tcp_url_keeps_credentials_and_port() -> None:
    """Swapping the database of a TCP URL keeps user, password, host and port."""
    assert with_database(TCP, "other") == "postgresql://u:p@localhost:5432/other"


def test_with_database_normalizes_scheme_and_adds_missing_path() -> None:
    """with_database returns a libpq URL and works when the URL names no database."""
    assert (
        with_database("postgresql+psycopg://u@h:1/app?sslmode=require", "x") == "postgresql://u@h:1/x?sslmode=require"
    )
    assert with_database("postgresql://u@h", "x") == "postgresql://u@h/x"


def test_database_name() -> None:
    """database_name reads the path; no path means "postgres"."""
    assert database_name(SOCKET) == "kodo"
    assert database_name(TCP) == "app"
    assert database_name("postgresql+psycopg://u@h/db1?sslmode=require") == "db1"
    assert database_name("postgresql://u@h") == "postgres"
    assert database_name("postgresql://u@h/?sslmode=require") == "postgres"


def test_with_database_then_database_name() -> None:
    """The database put in by with_database is the one database_name reads back."""
    for url in (SOCKET, TCP):
        assert database_name(with_database(url, "fresh_db")) == "fresh_db"
