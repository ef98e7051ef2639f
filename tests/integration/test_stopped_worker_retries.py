"""A stopped worker's DBOS threads stop retrying database errors, so nothing waits out an outage for it."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa
from dbos._dbos import _get_dbos_instance
from dbos._sys_db import db_retry

from helpers import tcp_refused
from kodo import outages
from kodo.main import Worker, launch_worker
from kodo.settings import Settings
from kodo.workflows import outage_retry


def _retrying_in_the_executor(release: threading.Event, calls: list[float], outcome: list[BaseException]) -> None:
    """A DBOS-retried database call (as a workflow's result poll is) failing as a dropped database does."""
    error = tcp_refused()

    @db_retry(initial_backoff=0.2, max_backoff=0.2)
    def poll() -> None:
        calls.append(time.monotonic())
        raise error

    release.wait(30)
    try:
        poll()
    except BaseException as raised:
        outcome.append(raised)


def test_retiring_the_executor_threads_ends_dbos_retries_in_them(worker: Worker) -> None:
    """Before retiring, DBOS's retry keeps retrying; once the worker's threads are retired it raises at once."""
    release, calls, outcome = threading.Event(), list[float](), list[BaseException]()
    future = _get_dbos_instance()._executor.submit(_retrying_in_the_executor, release, calls, outcome)
    try:
        release.set()
        deadline = time.monotonic() + 20
        while len(calls) < 3 and time.monotonic() < deadline:  # retried: an outage is waited out, as it should be
            time.sleep(0.05)
        assert len(calls) >= 3 and not outcome
        outage_retry.retire_executor_threads()  # what Worker.stop does before DBOS.destroy
        future.result(timeout=10)
        assert isinstance(outcome[0], sa.exc.OperationalError)
    finally:
        outages.clock.succeeded()


def test_worker_stop_retires_its_threads(settings: Settings, engine: sa.Engine) -> None:
    """Worker.stop marks the executor threads it leaves behind as retired (a thread of a new worker is not)."""
    assert settings.database_url is not None
    worker = launch_worker(settings, settings.database_url, engine, "monolith")
    executor = _get_dbos_instance()._executor
    executor.submit(threading.Event().set).result(timeout=10)
    threads = list(executor._threads)
    assert threads and not any(outage_retry.retired(thread) for thread in threads)
    worker.stop()
    assert all(outage_retry.retired(thread) for thread in threads)
    assert not outage_retry.retired(threading.current_thread())
