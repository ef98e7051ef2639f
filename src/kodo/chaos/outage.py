"""A Postgres outage on purpose: stop kodo's embedded server, keep it down, start it again.

The driver of the outage tests (``tests/e2e/test_db_outage.py``) and of ``kodo chaos``'s "Postgres outage,
no kodo restart" fault kind. Only the embedded server (``$KODO_HOME/pg``) can be stopped this way; kodo's
processes are left running, which is the point.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kodo.database import EmbeddedPostgres
from kodo.errors import ConfigurationError


@dataclass
class OutageWindow:
    """When the server went down and came back (monotonic seconds); ``down_sec`` once it is back."""

    stopped_at: float = 0.0
    started_at: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def down_sec(self) -> float:
        end = self.started_at if self.started_at is not None else time.monotonic()
        return end - self.stopped_at


@contextlib.contextmanager
def postgres_down(home: Path) -> Iterator[OutageWindow]:
    """Stop the embedded Postgres under ``home`` for the ``with`` body, then start it again (even on error)."""
    server = EmbeddedPostgres(home)
    if not server.status().running:
        raise ConfigurationError(f"no embedded Postgres is running under {home}")
    window = OutageWindow()
    server.stop()
    window.stopped_at = time.monotonic()
    try:
        yield window
    finally:
        server.start()
        window.started_at = time.monotonic()


def postgres_outage(home: Path, seconds: float) -> OutageWindow:
    """Keep the embedded Postgres under ``home`` down for ``seconds``; returns the window it was down."""
    with postgres_down(home) as window:
        time.sleep(seconds)
    return window
