"""Wake a parent the moment a sandbox child ends, instead of polling for it.

``Completions`` is one per process: a dedicated psycopg connection (autocommit) that runs
``LISTEN kodo_workflow_done`` (the trigger in ``kodo.store.completion_trigger`` notifies with the
child's workflow id when an ``ExecuteTask`` row becomes terminal) and a daemon thread that hands each
notification to the ``Waiter``\\ s registered for that id.

A notification is only a hint; the durable read stays ``handle.get_result``. So every failure degrades
to polling and costs latency, never correctness:

* a waiter is registered *before* its child is enqueued, so a fast child cannot be missed;
* while the listener is not connected, ``expect`` hands out waiters that are already woken, and a lost
  connection wakes every registered waiter (any of them may have missed its notification), so their
  parents go straight to ``get_result``'s polling; the thread reconnects with a bounded backoff;
* ``settle`` re-reads the child's status (plain SQL on ``dbos.workflow_status``, no DBOS operation) every
  ``WAIT_SLICE_SEC``, so a notification that never comes costs at most one slice.

``kodo.main`` starts the listener and ``install``\\ s it; with none installed, ``fan_out`` polls as before.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator

import psycopg
import sqlalchemy as sa
import structlog

from kodo.database import libpq_url
from kodo.store import durable_status
from kodo.store.completion_trigger import CHANNEL

log = structlog.get_logger("kodo")

ACTIVE = frozenset({"ENQUEUED", "PENDING", "DELAYED"})
WAIT_SLICE_SEC = 5.0  # the most a lost notification can cost: the child's status is re-read this often


class Waiter:
    """One awaited workflow id: ``wait`` returns True once its completion was signalled (or may have been missed)."""

    __slots__ = ("_event", "workflow_id")

    def __init__(self, workflow_id: str, *, woken: bool = False) -> None:
        self.workflow_id = workflow_id
        self._event = threading.Event()
        if woken:
            self._event.set()

    @property
    def woken(self) -> bool:
        return self._event.is_set()

    def wake(self) -> None:
        self._event.set()

    def wait(self, timeout: float | None) -> bool:
        """Block until woken or ``timeout`` seconds pass; returns whether it was woken."""
        return self._event.wait(timeout)


class Completions:
    """The process's ``LISTEN kodo_workflow_done`` connection and the waiters it wakes."""

    def __init__(
        self,
        url: str,
        *,
        poll_sec: float = 0.25,
        min_backoff_sec: float = 0.1,
        max_backoff_sec: float = 5.0,
        application_name: str = "kodo_completions",
    ) -> None:
        self.url = libpq_url(url)
        self.poll_sec = poll_sec
        self.min_backoff_sec = min_backoff_sec
        self.max_backoff_sec = max_backoff_sec
        self.application_name = application_name
        self.connections = 0  # LISTEN connections made so far (a reconnect adds one)
        self.backend_pid: int | None = None
        self._lock = threading.Lock()
        self._waiters: dict[str, list[Waiter]] = {}
        self._listening = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def wait_listening(self, timeout: float) -> bool:
        """Block until the LISTEN is in place (or ``timeout``); returns whether it is."""
        return self._listening.wait(timeout)

    def start(self, *, ready_timeout: float = 5.0) -> Completions:
        """Start the listener thread and wait (bounded) for its first LISTEN; never raises for the database."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kodo-completions", daemon=True)
        self._thread.start()
        if not self.wait_listening(ready_timeout):
            log.warning("completion listener not connected yet; fan-outs poll until it is", timeout=ready_timeout)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (it closes its connection) and wake every waiter, so nobody waits on a dead listener."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        self._lose()

    def expect(self, workflow_id: str) -> Waiter:
        """A waiter for ``workflow_id``; register it before the workflow can finish (before enqueueing it)."""
        with self._lock:
            if not self._listening.is_set():
                return Waiter(workflow_id, woken=True)  # nothing would wake it: poll
            waiter = Waiter(workflow_id)
            self._waiters.setdefault(workflow_id, []).append(waiter)
            return waiter

    def forget(self, workflow_id: str, waiter: Waiter | None = None) -> None:
        """Drop ``waiter`` (or every waiter) for ``workflow_id``."""
        with self._lock:
            waiting = self._waiters.get(workflow_id)
            if waiting is None:
                return
            if waiter is None:
                waiting.clear()
            elif waiter in waiting:
                waiting.remove(waiter)
            if not waiting:
                del self._waiters[workflow_id]

    def waiting(self) -> int:
        """How many waiters are registered (for diagnostics and tests)."""
        with self._lock:
            return sum(len(waiters) for waiters in self._waiters.values())

    def _deliver(self, workflow_id: str) -> None:
        with self._lock:
            waiting = list(self._waiters.get(workflow_id, ()))
        for waiter in waiting:
            waiter.wake()

    def _lose(self) -> None:
        """Not listening any more: wake everyone registered (their notification may be lost)."""
        with self._lock:
            self._listening.clear()
            waiting = [waiter for waiters in self._waiters.values() for waiter in waiters]
        for waiter in waiting:
            waiter.wake()

    def _run(self) -> None:
        backoff = self.min_backoff_sec
        while not self._stop.is_set():
            conn: psycopg.Connection[tuple[object, ...]] | None = None
            try:
                conn = psycopg.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=5,
                    application_name=self.application_name,
                    keepalives=1,
                    keepalives_idle=10,
                    keepalives_interval=5,
                    keepalives_count=3,
                )
                conn.execute(f"LISTEN {CHANNEL}")
                self.backend_pid = conn.info.backend_pid
                self.connections += 1
                self._listening.set()
                backoff = self.min_backoff_sec
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=self.poll_sec):
                        self._deliver(note.payload)
            except Exception as error:  # never into workflows: they fall back to polling
                if not self._stop.is_set():
                    log.warning("completion listener lost its connection", error=repr(error), retry_in=backoff)
            finally:
                self._lose()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.max_backoff_sec)


class _Holder:
    current: Completions | None = None


def install(listener: Completions | None) -> None:
    """Make ``listener`` the one fan-outs use (``None`` uninstalls: fan-outs poll)."""
    _Holder.current = listener


def installed() -> Completions | None:
    return _Holder.current


@contextlib.contextmanager
def expecting(workflow_ids: Iterable[str]) -> Iterator[dict[str, Waiter]]:
    """Waiters for ``workflow_ids`` (none without a listener), forgotten on exit."""
    listener = _Holder.current
    if listener is None:
        yield {}
        return
    waiters = {workflow_id: listener.expect(workflow_id) for workflow_id in dict.fromkeys(workflow_ids)}
    try:
        yield waiters
    finally:
        for workflow_id, waiter in waiters.items():
            listener.forget(workflow_id, waiter)


def settle(engine: sa.Engine, workflow_id: str, waiter: Waiter | None, *, slice_sec: float = WAIT_SLICE_SEC) -> None:
    """Return once ``workflow_id`` has probably ended, so the ``get_result`` after it returns on its first check.

    Returns at once without a waiter, when the waiter is woken, when the workflow is not active (already
    finished: a replay after a crash), or if its status cannot be read. Plain SQL only, no DBOS operation.
    """
    if waiter is None:
        return
    while not waiter.woken:
        try:
            with engine.connect() as conn:
                found = durable_status.get(conn, workflow_id)
        except Exception as error:
            log.warning("cannot read a child's status; polling for it", workflow_id=workflow_id, error=repr(error))
            return
        if found is None or found.status not in ACTIVE or waiter.wait(slice_sec):
            return
