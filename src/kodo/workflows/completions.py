"""Wake a parent the moment a sandbox child ends, instead of polling for it.

``Completions`` is one per process: a ``kodo.store.notifications.Listener`` (its own connection and
thread) on ``kodo_workflow_done`` (the trigger in ``kodo.store.completion_trigger`` notifies with the
child's workflow id when an ``ExecuteTask`` row becomes terminal), whose thread hands each
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

import sqlalchemy as sa
import structlog

from kodo.store import durable_status
from kodo.store.completion_trigger import CHANNEL
from kodo.store.notifications import Listener

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

    def __init__(self, url: str, *, application_name: str = "kodo_completions", poll_sec: float = 0.25) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, list[Waiter]] = {}
        self.listener = Listener(
            url, CHANNEL, deliver=self._deliver, lost=self._lose, application_name=application_name, poll_sec=poll_sec
        )

    @property
    def listening(self) -> bool:
        return self.listener.listening

    @property
    def connections(self) -> int:
        """LISTEN connections made so far (a reconnect adds one)."""
        return self.listener.connections

    @property
    def backend_pid(self) -> int | None:
        return self.listener.backend_pid

    def wait_listening(self, timeout: float) -> bool:
        """Block until the LISTEN is in place (or ``timeout``); returns whether it is."""
        return self.listener.wait_listening(timeout)

    def start(self, *, ready_timeout: float = 5.0) -> Completions:
        """Start the listener thread and wait (bounded) for its first LISTEN; never raises for the database."""
        if not self.listener.start(ready_timeout=ready_timeout):
            log.warning("completion listener not connected yet; fan-outs poll until it is", timeout=ready_timeout)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (it closes its connection) and wake every waiter, so nobody waits on a dead listener."""
        self.listener.stop(timeout)

    def expect(self, workflow_id: str) -> Waiter:
        """A waiter for ``workflow_id``; register it before the workflow can finish (before enqueueing it)."""
        with self._lock:
            if not self.listener.listening:
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
            waiting = [waiter for waiters in self._waiters.values() for waiter in waiters]
        for waiter in waiting:
            waiter.wake()


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
