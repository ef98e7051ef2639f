"""structlog set-up: console output on a TTY, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", *, cache: bool = True) -> None:
    """Log lines go to the process's own stderr (fd 2), never to stdout, where commands print their data.

    ``sys.__stderr__``, not ``sys.stderr``: a stream swapped in for one command (click's test runner)
    must not capture the log lines of worker threads that outlive it. ``cache=False`` (the test suite) keeps
    loggers uncached, so ``structlog.testing.capture_logs`` sees the events of a logger used before it.
    """
    numeric = getattr(logging, level.upper(), logging.INFO)
    stream = sys.__stderr__ or sys.stderr
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if stream.isatty() else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=cache,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=stream, format="%(name)s %(levelname)s %(message)s")
