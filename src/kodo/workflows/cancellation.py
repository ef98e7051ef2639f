"""Cancel-aware sandboxes: a cancelled ``ExecuteTask`` has its running command killed, not awaited.

DBOS stops a cancelled workflow only at its next checkpoint, and a sandbox command can run for
minutes. So while ``executeTask`` runs a command it registers the task here; one watcher thread
per worker process polls ``dbos.workflow_status`` every ``KODO_CANCEL_POLL_INTERVAL_SEC`` for the
registered task ids (one query for all of them) and, for each one now ``CANCELLED``, calls
``Sandbox.kill(task_key)`` in the process that owns the command — only the worker running a
sandbox can kill it. The step then raises DBOS's cancellation (nothing is recorded), so a resume
runs the task again from scratch. The thread exits when no task is registered.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import structlog

from kodo import outages
from kodo.store import durable_status
from kodo.workflows.runtime import services

log = structlog.get_logger("kodo.cancel")


@dataclass
class Watched:
    """One running task: ``canceled`` flips (and ``event`` fires) once its workflow is cancelled."""

    task_key: str
    event: threading.Event = field(default_factory=threading.Event)

    @property
    def canceled(self) -> bool:
        return self.event.is_set()

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early on cancellation."""
        self.event.wait(seconds)


class _Watcher:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tasks: dict[str, Watched] = {}
        self.thread: threading.Thread | None = None
        self.outage = outages.OutageLog("cancel-watch")

    def add(self, watched: Watched) -> None:
        with self.lock:
            self.tasks[watched.task_key] = watched
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="kodo-cancel-watch", daemon=True)
                self.thread.start()

    def remove(self, watched: Watched) -> None:
        with self.lock:
            if self.tasks.get(watched.task_key) is watched:
                del self.tasks[watched.task_key]

    def _loop(self) -> None:
        while True:
            with self.lock:
                if not self.tasks:
                    self.thread = None
                    return
            try:
                svc = services()
            except RuntimeError:  # the worker stopped under us
                with self.lock:
                    self.thread = None
                return
            threading.Event().wait(svc.settings.cancel_poll_interval_sec)
            with self.lock:
                keys = [key for key, item in self.tasks.items() if not item.canceled]
            if not keys:
                continue
            try:
                with svc.engine.connect() as conn:
                    found = durable_status.cancelled_among(conn, keys)
            except Exception as error:  # a database error: look again next round (an outage: logged once)
                if not self.outage.failed(error):
                    log.warning("cancel watch query failed", error=repr(error))
                continue
            self.outage.succeeded()
            for key in found:
                with self.lock:
                    item = self.tasks.get(key)
                if item is None:
                    continue
                item.event.set()
                killed = svc.sandbox.kill(key)
                log.info("task cancelled; sandbox killed", task_key=key, killed=killed)


_WATCHER = _Watcher()


@contextmanager
def watching(task_key: str) -> Iterator[Watched]:
    """Watch the task (its ExecuteTask workflow id) for cancellation while the block runs."""
    watched = Watched(task_key)
    _WATCHER.add(watched)
    try:
        yield watched
    finally:
        _WATCHER.remove(watched)
