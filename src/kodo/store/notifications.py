"""A ``LISTEN`` connection on its own daemon thread, handing each notification's payload to a callback.

One dedicated psycopg connection (autocommit, TCP keepalives) per ``Listener``. Its owner supplies two
callbacks: ``deliver(payload)`` for every notification, and ``lost()`` whenever the listener stops
listening (a dropped connection, or ``stop``), because a notification sent while nobody listened is gone
and whoever waits on one must fall back to reading the database. The thread reconnects with a bounded
exponential backoff. A notification is only ever a hint to re-read: nothing durable depends on it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import psycopg
import structlog

from kodo import outages
from kodo.database import libpq_url

log = structlog.get_logger("kodo")


class Listener:
    """``LISTEN <channel>`` on a daemon thread; see the module docstring."""

    def __init__(
        self,
        url: str,
        channel: str,
        *,
        deliver: Callable[[str], None],
        lost: Callable[[], None],
        application_name: str,
        poll_sec: float = 0.25,
        min_backoff_sec: float = 0.1,
        max_backoff_sec: float = 5.0,
    ) -> None:
        self.url = libpq_url(url)
        self.channel = channel
        self.application_name = application_name
        self.poll_sec = poll_sec
        self.min_backoff_sec = min_backoff_sec
        self.max_backoff_sec = max_backoff_sec
        self.connections = 0  # LISTEN connections made so far (a reconnect adds one)
        self.backend_pid: int | None = None
        self._deliver = deliver
        self._lost = lost
        self._listening = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage = outages.OutageLog(f"listen {channel}")

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def wait_listening(self, timeout: float) -> bool:
        """Block until the LISTEN is in place (or ``timeout``); returns whether it is."""
        return self._listening.wait(timeout)

    def start(self, *, ready_timeout: float = 5.0) -> bool:
        """Start the thread and wait (bounded) for its first LISTEN; returns whether it is listening.

        Never raises for the database: without a connection the owner's waiters fall back to reading.
        """
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"kodo-listen-{self.channel}", daemon=True)
        self._thread.start()
        return self.wait_listening(ready_timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (it closes its connection); ``lost`` is called, so nobody waits on a dead listener."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        self._lose()

    def _lose(self) -> None:
        self._listening.clear()  # first: a waiter registered from here on is handed out already woken
        self._lost()

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
                conn.execute(f"LISTEN {self.channel}")
                self.backend_pid = conn.info.backend_pid
                self.connections += 1
                self._listening.set()
                self._outage.succeeded()
                backoff = self.min_backoff_sec
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=self.poll_sec):
                        self._deliver(note.payload)
            except Exception as error:  # never into the owner: its waiters fall back to reading
                if not self._stop.is_set() and not self._outage.failed(error):
                    log.warning(
                        "listener lost its connection", channel=self.channel, error=repr(error), retry_in=backoff
                    )
            finally:
                self._lose()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.max_backoff_sec)
