"""kodo.outages: the transient-error classifier on real refused connections, log-once, wait_out, the 503."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
import structlog
from dbos._utils import retriable_postgres_exception
from fastapi import FastAPI
from fastapi.testclient import TestClient

from helpers import socket_missing, tcp_refused
from kodo import outages
from kodo.api import errors
from kodo.errors import DatabaseUnavailable, InvalidInput


@pytest.fixture(autouse=True)
def _no_outage_left_behind() -> Iterator[None]:
    """These tests note failures on the process's outage clock; end each with the clock clear."""
    yield
    outages.clock.succeeded()


def test_a_refused_tcp_connection_is_transient() -> None:
    """Nothing listening on the port: transient (DBOS agrees)."""
    error = tcp_refused()
    assert outages.is_transient(error) and retriable_postgres_exception(error)


def test_a_missing_unix_socket_is_transient_where_dbos_says_no(tmp_path: Path) -> None:
    """The embedded Postgres while down ("connection is bad"): transient for kodo, though DBOS's own check misses it."""
    error = socket_missing(tmp_path)
    assert "connection is bad" in str(error.orig)
    assert outages.is_transient(error)
    assert not retriable_postgres_exception(error)  # why kodo widens DBOS's check (kodo.workflows.outage_retry)


def test_the_raw_driver_error_and_a_chained_error_are_transient(tmp_path: Path) -> None:
    """psycopg's own error (a LISTEN thread's) and a KodoError raised from one classify the same."""
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(f"postgresql://kodo@/kodo?host={tmp_path}")
    assert outages.is_transient(caught.value)
    try:
        raise InvalidInput("x") from caught.value
    except InvalidInput as chained:
        assert outages.is_transient(chained)


def test_a_pool_checkout_timeout_is_transient_and_a_bad_input_is_not() -> None:
    """Pool exhaustion waits like an outage; an InvalidInput or a plain error never does."""
    assert outages.is_transient(sa.exc.TimeoutError("QueuePool limit reached"))
    assert outages.is_transient(DatabaseUnavailable())
    assert not outages.is_transient(InvalidInput("bad"))
    assert not outages.is_transient(ValueError("connection is bad"))  # text alone, not a driver error


def test_outage_log_warns_once_per_outage() -> None:
    """Five failed rounds log one warning; the first success logs one line with the outage's length."""
    outage = outages.OutageLog("test-loop")
    error = tcp_refused()
    with structlog.testing.capture_logs() as logged:
        assert all(outage.failed(error) for _ in range(5))
        assert not outage.failed(ValueError("not a database error"))
        outage.succeeded()
        outage.succeeded()
    events = [entry["event"] for entry in logged]
    assert events == ["database unavailable; waiting for it", "database back; resumed"]
    assert logged[1]["failed_rounds"] == 5 and not outage.down


def test_wait_out_retries_until_the_call_succeeds() -> None:
    """Two transient failures, then an answer: wait_out returns it."""
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise tcp_refused()
        return "ok"

    assert outages.wait_out(flaky, max_sec=30, what="flaky") == "ok" and len(calls) == 3


def test_wait_out_gives_up_past_the_ceiling_and_never_retries_a_real_error() -> None:
    """Past max_sec a DatabaseUnavailable naming the cause; a non-transient error passes through at once."""
    error = tcp_refused()

    def down() -> None:
        raise error

    with pytest.raises(DatabaseUnavailable) as gave_up:
        outages.wait_out(down, max_sec=0.3, what="step x")
    assert "step x: database unavailable for more than 0.3s" in gave_up.value.message
    calls = []

    def wrong() -> None:
        calls.append(1)
        raise InvalidInput("bad")

    with pytest.raises(InvalidInput):
        outages.wait_out(wrong, max_sec=30, what="wrong")
    assert calls == [1]


def test_stopping_the_worker_ends_a_wait_at_once_and_spares_later_waits() -> None:
    """abandon_waits (Worker.stop) ends a wait under way with DatabaseUnavailable; a wait begun after it waits."""
    import threading

    error = tcp_refused()
    began = threading.Event()

    def down() -> None:
        began.set()
        raise error

    outcome: list[BaseException] = []

    def waiter() -> None:
        try:
            outages.wait_out(down, max_sec=600, what="stale step")
        except BaseException as raised:
            outcome.append(raised)

    thread = threading.Thread(target=waiter)
    thread.start()
    assert began.wait(10)
    outages.abandon_waits()
    thread.join(timeout=10)
    assert not thread.is_alive() and isinstance(outcome[0], DatabaseUnavailable)
    assert "kodo is stopping" in outcome[0].message
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise tcp_refused()
        return "ok"

    assert outages.wait_out(flaky, max_sec=30, what="after the stop") == "ok"


def test_a_route_meeting_an_outage_answers_503_with_retry_after(tmp_path: Path) -> None:
    """A real refused connection inside a route: 503 {"error", "retryAfterSec"} + Retry-After, never a 500."""
    app = FastAPI()
    errors.install(app)
    engine = sa.create_engine(f"postgresql+psycopg://kodo@/kodo?host={tmp_path}")

    @app.get("/read")
    def read() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    @app.get("/wrapped")
    def wrapped() -> None:
        raise DatabaseUnavailable("database unavailable; retry later", retry_after_sec=7)

    with TestClient(app, raise_server_exceptions=False) as http:
        response = http.get("/read")
        explicit = http.get("/wrapped")
    engine.dispose()
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.json() == {"error": "database unavailable; retry later", "retryAfterSec": 5}
    assert explicit.status_code == 503 and explicit.headers["Retry-After"] == "7"
    assert errors.body_for(DatabaseUnavailable("x", 3)) == (503, {"error": "x", "retryAfterSec": 3})


def test_dbos_logger_says_one_connection_line_per_outage() -> None:
    """During an outage the first "cannot reach the database" record passes, the rest are dropped; others pass."""
    quiet = outages.QuietDuringOutage()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("dbos", logging.WARNING, __file__, 1, message, (), None)

    lost = "Exception encountered in queue thread for intentQ: connection is bad: connection to server failed"
    assert quiet.filter(record(lost))  # no outage on the clock: a lone error passes
    outages.clock.failed(tcp_refused())
    passed = [quiet.filter(record(lost)) for _ in range(50)]
    assert passed == [True] + [False] * 49 and quiet.suppressed == 49
    assert quiet.filter(record("Step being automatically retried"))  # not an outage line
    outages.clock.succeeded()
    outages.clock.failed(tcp_refused())  # a new outage: its first line passes again
    assert quiet.filter(record(lost)) and not quiet.filter(record(lost))


def test_a_retry_sleep_during_an_outage_ends_when_the_outage_does() -> None:
    """DBOS's backoff (up to 60 s) sleeps through the clock: the end of the outage wakes it at once."""
    import threading

    outages.clock.failed(tcp_refused())
    sleeper = threading.Thread(target=outages.clock.sleep, args=(600,), daemon=True)
    sleeper.start()
    sleeper.join(0.2)
    assert sleeper.is_alive()  # still waiting: the outage goes on
    outages.clock.succeeded()
    sleeper.join(30)
    assert not sleeper.is_alive()
