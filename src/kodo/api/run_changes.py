"""Wake the API's long-polls and event streams when a run changes, instead of re-reading on a timer.

A trigger on ``app.runs`` (migration ``0006_run_changes.sql``) notifies ``kodo_run_changed`` with
``'<run id> <status> <workflow id>'`` when a run row changes, at the commit. ``RunChanges`` is one per API
process: a ``kodo.store.notifications.Listener`` on that channel, and the ``RunWatch``\\ es registered by
run id or workflow id (a route watches the key it was given, before its first read), each woken on its
event loop (``call_soon_threadsafe``) from the listener's thread.

A notification is only a hint to re-read, so every gap costs latency, never correctness:

* a watch is registered *before* the read it guards, so a change that commits in between still wakes it;
* while the listener is not connected, a watch's owner re-reads every ``FALLBACK_SLICE_SEC``, as before
  there was a listener (``slice_sec``); a lost connection wakes every watch;
* what the trigger cannot see (a workflow's DBOS status that moves without its run row, a gate or an
  artifact row written without touching the run) is caught by the owner's re-read every ``slice``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from kodo.store.notifications import Listener

T = TypeVar("T")

CHANNEL = "kodo_run_changed"
LIVE_SLICE_SEC = 5.0  # how often a waiter re-reads anyway while notifications flow
FALLBACK_SLICE_SEC = 0.25  # how often a waiter re-reads when nothing would wake it


class RunWatch:
    """One waiter on one run: ``wait`` returns once a change it ``wants`` was notified, or at its timeout."""

    __slots__ = ("_event", "_listening", "_loop", "run_id", "wants")

    def __init__(self, run_id: str, wants: Callable[[str], bool] | None, *, listening: Callable[[], bool]) -> None:
        self.run_id = run_id
        self.wants = wants
        self._listening = listening
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def slice_sec(self, live: float = LIVE_SLICE_SEC) -> float:
        """How long to wait before re-reading anyway: ``live`` while notifications flow, short when they cannot."""
        return live if self._listening() else FALLBACK_SLICE_SEC

    def notify(self, status: str | None) -> None:
        """From the listener's thread: wake the waiter if it wants this status (``None``: wake regardless)."""
        if status is None or self.wants is None or self.wants(status):
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits any more
                self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a wanted change; returns whether one came (and re-arms)."""
        try:
            await asyncio.wait_for(self._event.wait(), max(timeout, 0.0))
        except TimeoutError:
            return False
        self._event.clear()
        return True


class RunChanges:
    """The API process's ``LISTEN kodo_run_changed`` and the watches it wakes."""

    def __init__(self, url: str, *, application_name: str = "kodo-api-changes") -> None:
        self._lock = threading.Lock()
        self._watches: dict[str, list[RunWatch]] = {}
        self.listener = Listener(
            url, CHANNEL, deliver=self._deliver, lost=self._lose, application_name=application_name
        )

    def start(self) -> RunChanges:
        self.listener.start()
        return self

    def stop(self) -> None:
        """Stop listening and wake every watch; the thread closes its connection within a poll (not awaited)."""
        self.listener.stop(timeout=0)

    @contextlib.contextmanager
    def watch(self, run_id: str, wants: Callable[[str], bool] | None = None) -> Iterator[RunWatch]:
        """A watch on ``run_id`` (a run id or a workflow id) for the ``with`` block; ``wants(status)`` (the run's
        ``app.runs`` status) filters the changes that wake it."""
        with self._lock:
            watch = RunWatch(run_id, wants, listening=lambda: self.listener.listening)
            self._watches.setdefault(run_id, []).append(watch)
        try:
            yield watch
        finally:
            with self._lock:
                watching = self._watches.get(run_id, [])
                if watch in watching:
                    watching.remove(watch)
                if not watching:
                    self._watches.pop(run_id, None)

    def watching(self) -> int:
        """How many watches are registered (for diagnostics and tests)."""
        with self._lock:
            return sum(len(watches) for watches in self._watches.values())

    def _deliver(self, payload: str) -> None:
        run_id, _, rest = payload.partition(" ")
        status, _, workflow_id = rest.partition(" ")
        with self._lock:
            watching = [*self._watches.get(run_id, ()), *self._watches.get(workflow_id, ())]
        for watch in watching:
            watch.notify(status or None)

    def _lose(self) -> None:
        """Not listening any more: wake every watch (its notification may be lost)."""
        with self._lock:
            watching = [watch for watches in self._watches.values() for watch in watches]
        for watch in watching:
            watch.notify(None)


async def read_until(
    changes: RunChanges | None,
    key: str,
    read: Callable[[], T],
    done: Callable[[T], bool],
    timeout_s: float,
    *,
    wants: Callable[[str], bool] | None = None,
    live_slice_sec: float = LIVE_SLICE_SEC,
) -> T:
    """A long-poll: ``read()`` (in the thread pool) until ``done`` holds or ``timeout_s`` passes, re-reading when
    run ``key`` changes (a change ``wants``) and at least every ``live_slice_sec``; returns the last read."""
    deadline = time.monotonic() + timeout_s
    with watching(changes, key, wants) as watch:  # before the first read: no change is missed
        value = await run_in_threadpool(read)
        while not done(value) and (left := deadline - time.monotonic()) > 0:
            await watch.wait(min(left, watch.slice_sec(live_slice_sec)))
            value = await run_in_threadpool(read)
    return value


@contextlib.contextmanager
def watching(changes: RunChanges | None, run_id: str, wants: Callable[[str], bool] | None = None) -> Iterator[RunWatch]:
    """``changes.watch(...)``, or without a listener a watch nothing wakes (its owner re-reads on a timer)."""
    if changes is None:
        yield RunWatch(run_id, wants, listening=lambda: False)
        return
    with changes.watch(run_id, wants) as watch:
        yield watch
