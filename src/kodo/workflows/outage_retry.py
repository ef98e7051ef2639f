"""DBOS waits out a Postgres outage instead of killing the workflow thread that met it.

DBOS 3.4 already retries, with backoff and no deadline, every system-database call (``db_retry``) and every
datasource transaction (``run_tx_step``) that fails with what *its* check calls a connection error
(``dbos._utils.retriable_postgres_exception``). That check misses psycopg's "connection is bad" — what a
Unix socket that is missing or refused raises, i.e. kodo's embedded Postgres while it is down — so a
workflow inside a step when the server stopped died with "Exception encountered in background workflow"
and stayed ``PENDING`` for good (issue #26).

:func:`install` puts kodo's classifier (``kodo.outages.is_transient``) beside DBOS's in the two modules
that consult it, with a ceiling: once the process's outage (``kodo.outages.clock``) is older than
``KODO_DB_OUTAGE_MAX_SEC`` the check says "not retriable", the waiting thread gives up, and its workflow
is left ``PENDING`` for the stranded-work watchdog (``kodo.ops.stranded``) to recover when the database is
back. It also quiets DBOS's logger to one line per outage (``kodo.outages.QuietDuringOutage``), and ends
DBOS's retry sleeps when the outage ends (``_TimeWithOutageSleep``).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import structlog
from dbos import _datasource as dbos_datasource
from dbos import _sys_db as dbos_system_database
from dbos import _utils as dbos_utils

from kodo import outages

log = structlog.get_logger("kodo.outage")
_dbos_check: Callable[[Exception], bool] = dbos_utils.retriable_postgres_exception
_quiet = outages.QuietDuringOutage()
# Executor threads of a stopped worker (``retire_executor_threads``): their retries give up at once.
_retired: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


class _TimeWithOutageSleep:
    """``time`` for ``dbos._sys_db``: the same module, but a sleep during an outage ends when the outage does.

    DBOS's system-database retry backs off up to 60 s; without this, work resumed up to a minute after a
    long outage ended (measured: about 45 s after a 60 s outage). An outage ends at the next successful
    round of a background loop (the heartbeat, a LISTEN reconnect), so now within a few seconds.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        me = threading.current_thread()
        if me not in _retired:
            outages.clock.sleep(seconds)
            return
        deadline = time.monotonic() + seconds  # a stopped worker's thread: give up as soon as an outage is seen
        while (left := deadline - time.monotonic()) > 0 and not outages.clock.state().down:
            outages.clock.sleep(min(left, 0.5))


class _Ceiling:
    max_sec: float = 600.0
    gave_up_outage: float | None = None


def retriable(e: Exception) -> bool:
    """DBOS's retry check, widened by kodo's classifier and bounded by ``KODO_DB_OUTAGE_MAX_SEC``."""
    error = e  # DBOS's parameter name, kept so the two checks have one signature
    if threading.current_thread() in _retired:
        return False  # its worker has stopped: the workflow is recovered by a live one, not waited for here
    if not (_dbos_check(error) or outages.is_transient(error)):
        return False
    if not outages.is_outage_error(error):
        return True  # a serialization failure or deadlock: rolled back, rerun it (no outage)
    age = outages.clock.failed(error)
    if age <= _Ceiling.max_sec:
        return True
    since = outages.clock.state().since_monotonic
    if _Ceiling.gave_up_outage != since:
        _Ceiling.gave_up_outage = since
        log.error(
            "database unavailable longer than KODO_DB_OUTAGE_MAX_SEC: workflow threads stop waiting; "
            "their workflows stay PENDING for the stranded-work watchdog",
            max_sec=_Ceiling.max_sec,
            error=outages.describe(error),
        )
    return False


def install(max_outage_sec: float) -> None:
    """Make DBOS (in this process) consult :func:`retriable`; idempotent."""
    _Ceiling.max_sec = max_outage_sec
    # DBOS internals, in this one place: both modules imported the check by name, so both names are replaced.
    dbos_system_database.retriable_postgres_exception = retriable  # type: ignore[attr-defined]
    dbos_datasource.retriable_postgres_exception = retriable  # type: ignore[attr-defined]
    dbos_system_database.time = _TimeWithOutageSleep()  # type: ignore[attr-defined,assignment]
    dbos_logger = logging.getLogger("dbos")
    if _quiet not in dbos_logger.filters:
        dbos_logger.addFilter(_quiet)


def retire_executor_threads() -> None:
    """Mark the DBOS executor threads of this process's stopping worker: from now on a database error they
    meet is not retried (DBOS's ``db_retry`` would otherwise keep a thread of a destroyed DBOS waiting up to
    ``KODO_DB_OUTAGE_MAX_SEC`` for a database that may be gone for good, and hold its process at exit).
    Their workflows are recovered by a live worker, as after a crash.

    DBOS internals, in this one place: the executor is DBOS's ``ThreadPoolExecutor``; it has no public
    accessor, and ``DBOS.destroy`` does not wait for its threads.
    """
    from dbos._dbos import _get_dbos_instance

    try:
        dbos = _get_dbos_instance()
    except Exception:  # no DBOS in this process: nothing to retire
        return
    executor = dbos._executor_field
    if executor is not None:
        _retired.update(executor._threads)


def retired(thread: threading.Thread) -> bool:
    return thread in _retired


def live_workflow_ids() -> set[str] | None:
    """The workflows with an execution running in this process (the stranded-work watchdog's "live"), or
    ``None`` while DBOS's thread pool has a backlog: a workflow dequeued but still waiting for a thread is
    PENDING with no execution yet, and must not be mistaken for a stranded one.

    DBOS internals, in this one place: DBOS 3.4 keeps the set (``ActiveWorkflowById``) but has no public
    accessor; its entries are added when an execution starts in this process and removed when it ends.
    """
    from dbos._dbos import _get_dbos_instance

    dbos = _get_dbos_instance()
    if dbos._executor._work_queue.qsize() > 0:
        return None
    return set(dbos._active_workflows_set.activeList())
