"""Database outages: which errors are transient (the one classifier), and logging once per outage.

A *transient* database error is one that says the database is (for now) unreachable or went away under a
statement, not that the statement was wrong: a refused or missing socket, a dropped connection, an
administrator shutdown, a server that is starting or stopping, a pool checkout that timed out, or a
serialization failure or deadlock (its transaction rolled back, so running it again is right). Everything
else (a constraint, a bad value, a cancelled statement) is not, and is never retried.

Every place that waits out an outage asks :func:`is_transient`: DBOS's own retry loops (kodo installs it
next to DBOS's check, ``kodo.workflows.outage_retry``), the background loops (:class:`OutageLog`) and the
API's error mapping (a 503 with ``Retry-After``).

:data:`clock` is this process's view of the current outage: a transient failure starts it, the next
successful round trip of a background loop ends it. ``KODO_DB_OUTAGE_MAX_SEC`` is measured on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg
import sqlalchemy as sa
import structlog

from kodo.errors import DatabaseUnavailable

# SQLSTATE classes: 08 connection exception, 53 insufficient resources, 57 operator intervention
# (admin shutdown, crash shutdown, cannot connect now).
TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57")
# 40001 serialization failure, 40P01 deadlock, 25P03 idle-in-transaction session timeout: rolled back, rerun.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "25P03"})
# 57014 query_canceled (a statement timeout or an explicit cancel): rerunning would undo the cancel.
PERMANENT_SQLSTATES = frozenset({"57014"})
# What psycopg says when there is no server to talk to (these errors carry no SQLSTATE). "connection is
# bad" is a Unix socket that is missing or refused: the embedded Postgres while it is down.
CONNECTION_MESSAGES = (
    "connection is bad",
    "connection failed",
    "connection is lost",
    "connection is closed",
    "server closed the connection",
    "consuming input failed",
    "terminating connection",
    "could not receive data",
    "could not send data",
    "the database system is",
    "no connection to the server",
    "ssl connection has been closed",
)

log = structlog.get_logger("kodo.outage")


def _driver_error_is_transient(error: BaseException) -> bool:
    if isinstance(error, psycopg.errors.ConnectionTimeout):
        return True
    sqlstate = getattr(error, "sqlstate", None) or ""
    if sqlstate in PERMANENT_SQLSTATES:
        return False
    if sqlstate in TRANSIENT_SQLSTATES or sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES:
        return True
    if sqlstate or not isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    return message_is_transient(str(error))


def message_is_transient(message: str) -> bool:
    """Whether a rendered error message is one of psycopg's "no server to talk to" messages."""
    lowered = message.lower()
    return any(fragment in lowered for fragment in CONNECTION_MESSAGES)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` means "the database is unavailable for now" (retry later), not "this is wrong"."""
    if isinstance(error, DatabaseUnavailable | sa.exc.TimeoutError):
        return True
    if isinstance(error, sa.exc.DBAPIError):
        if error.connection_invalidated:
            return True
        return error.orig is not None and _driver_error_is_transient(error.orig)
    if isinstance(error, psycopg.Error):
        return _driver_error_is_transient(error)
    cause = error.__cause__
    return cause is not None and cause is not error and is_transient(cause)


def describe(error: BaseException) -> str:
    """One short line for an operator: the driver's first line, without the SQL."""
    inner = error.orig if isinstance(error, sa.exc.DBAPIError) and error.orig is not None else error
    first = (str(inner).strip().splitlines() or [type(inner).__name__])[0]
    return first[:300]


@dataclass(frozen=True, slots=True)
class OutageState:
    down: bool
    since_monotonic: float | None
    last_error: str | None

    def age_sec(self) -> float:
        return 0.0 if self.since_monotonic is None else time.monotonic() - self.since_monotonic


class OutageClock:
    """This process's current outage, if any: started by a transient failure, ended by a success."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None
        self._last_error: str | None = None
        self._back = threading.Event()
        self._back.set()

    def failed(self, error: BaseException) -> float:
        """Note a transient failure; returns how long the outage has lasted so far (seconds)."""
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()
                self._back.clear()
            self._last_error = describe(error)
            return time.monotonic() - self._since

    def succeeded(self) -> float | None:
        """Note a successful round trip; returns the outage's length if this ended one."""
        with self._lock:
            since, self._since = self._since, None
            self._back.set()
        return None if since is None else time.monotonic() - since

    def sleep(self, seconds: float) -> None:
        """``time.sleep``, except that a sleep during an outage ends as soon as the outage does."""
        if self._since is None:
            time.sleep(seconds)
        else:
            self._back.wait(seconds)

    def state(self) -> OutageState:
        with self._lock:
            return OutageState(down=self._since is not None, since_monotonic=self._since, last_error=self._last_error)


clock = OutageClock()


class OutageLog:
    """One background loop's log of outages: one warning when one starts, one line when it ends.

    ``failed`` returns False for an error that is not transient (the caller logs it as it always did).
    """

    def __init__(self, loop: str) -> None:
        self.loop = loop
        self._since: float | None = None
        self._failures = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, error: BaseException) -> bool:
        if not is_transient(error):
            return False
        clock.failed(error)
        self._failures += 1
        if self._since is None:
            self._since = time.monotonic()
            log.warning("database unavailable; waiting for it", loop=self.loop, error=describe(error))
        return True

    def succeeded(self) -> None:
        clock.succeeded()
        if self._since is None:
            return
        lasted = time.monotonic() - self._since
        log.info("database back; resumed", loop=self.loop, outage_sec=round(lasted, 1), failed_rounds=self._failures)
        self._since = None
        self._failures = 0


class QuietDuringOutage(logging.Filter):
    """On DBOS's logger: the first "cannot reach the database" line of an outage passes, the rest are counted.

    DBOS's queue threads and retry loops log one warning per poll or attempt; an outage of a minute would
    write thousands. The count is reported (and reset) by the next line that passes after the outage.
    """

    def __init__(self) -> None:
        super().__init__()
        self._outage: float | None = None
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not message_is_transient(record.getMessage()):
            return True
        state = clock.state()
        if not state.down:  # between outages: a lone connection error passes
            return True
        if self._outage == state.since_monotonic:
            self.suppressed += 1
            return False
        if self._outage is not None and self.suppressed:
            log.info("earlier outage: DBOS lines suppressed", lines=self.suppressed)
        self._outage = state.since_monotonic
        self.suppressed = 0
        return True


def is_outage_error(error: BaseException) -> bool:
    """Transient because the database is unreachable (not a serialization failure or deadlock to rerun)."""
    if not is_transient(error):
        return False
    inner = error.orig if isinstance(error, sa.exc.DBAPIError) else error
    return getattr(inner, "sqlstate", None) not in TRANSIENT_SQLSTATES


T = TypeVar("T")
MIN_BACKOFF_SEC = 0.1
MAX_BACKOFF_SEC = 5.0


class _Waits:
    """The waits under way belong to one life of the worker: stopping it (``abandon_waits``) ends them at once,
    so a stopping process never sits out an outage ceiling for a workflow it no longer runs."""

    lock = threading.Lock()
    generation = 0
    wake = threading.Event()


def abandon_waits() -> None:
    """End every ``wait_out`` under way now (each raises DatabaseUnavailable); later waits are not affected."""
    with _Waits.lock:
        _Waits.generation += 1
        woken, _Waits.wake = _Waits.wake, threading.Event()
    woken.set()


def wait_out(call: Callable[[], T], *, max_sec: float, what: str) -> T:
    """``call()``, retried with exponential backoff (0.1 s doubling to 5 s) while it fails transiently.

    For a step's own database work outside ``transact`` (DBOS retries that): the step waits for the
    database instead of failing or re-running what came before. Past ``max_sec`` of failures it raises
    :class:`DatabaseUnavailable` (from the last error). ``call`` must be safe to run again after a failure
    (a transaction that rolled back, or idempotent writes).
    """
    started = time.monotonic()
    backoff = MIN_BACKOFF_SEC
    outage = OutageLog(what)
    with _Waits.lock:
        generation, wake = _Waits.generation, _Waits.wake
    while True:
        try:
            result = call()
        except Exception as error:
            if not outage.failed(error):
                raise
            if time.monotonic() - started + backoff > max_sec:
                raise DatabaseUnavailable(
                    f"{what}: database unavailable for more than {max_sec:g}s ({describe(error)})"
                ) from error
            if wake.wait(backoff) or _Waits.generation != generation:
                raise DatabaseUnavailable(f"{what}: kodo is stopping ({describe(error)})") from error
            backoff = min(backoff * 2, MAX_BACKOFF_SEC)
            continue
        if outage.down:
            outage.succeeded()
        return result
