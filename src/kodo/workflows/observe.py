"""What a run tells the outside while it works: one structured log event per step and per external call
(bound to the run and workflow ids), span attributes on the step's span, and that span's ids for the
step row.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from dbos import DBOS

from kodo import telemetry

log = structlog.get_logger("kodo.run")


@contextmanager
def bound(run_id: str, workflow_id: str | None) -> Iterator[None]:
    """Every log event inside carries ``run_id``, ``workflow_id`` (the run's) and ``dbos_workflow_id`` (the
    workflow executing: a phase or a fan-out child)."""
    ids = {"run_id": run_id, "workflow_id": workflow_id, "dbos_workflow_id": DBOS.workflow_id}
    with structlog.contextvars.bound_contextvars(**{key: value for key, value in ids.items() if value}):
        yield


def step(workflow_id: str, step_id: str, attempt: int, **fields: Any) -> dict[str, str | None]:
    """A product step's attempt is being recorded: label its span (``workflowID``, step name, ``attempt``),
    log one ``step`` event, and return the span's ids as ``store.steps.record``'s ``trace_id``/``span_id``."""
    telemetry.annotate(**{"workflowID": workflow_id, "step.name": step_id, "step.functionID": step_id})
    telemetry.annotate(attempt=attempt)
    trace_id, span_id = telemetry.ids()
    log.info("step", step=step_id, attempt=attempt, trace_id=trace_id, span_id=span_id, **fields)
    return {"trace_id": trace_id, "span_id": span_id}


class Call:
    """What an external call reports back to its ``external_call`` block."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}

    def report(self, **fields: Any) -> None:
        self.fields.update(fields)
        telemetry.annotate(**{k: v for k, v in fields.items() if isinstance(v, str | int | float | bool)})


@contextmanager
def external_call(kind: str, name: str, **fields: Any) -> Iterator[Call]:
    """One call out of kodo (agent, sandbox): a child span ``<kind>.<name>`` and one ``external call`` log
    event with its duration and outcome (``error`` when it raised)."""
    call = Call()
    started = time.monotonic()
    error: str | None = None
    with telemetry.span(f"{kind}.{name}", **{"kodo.call": kind, **fields}):
        try:
            yield call
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            duration_ms = int((time.monotonic() - started) * 1000)
            event = {k: v for k, v in {**fields, **call.fields}.items() if v is not None} | {"duration_ms": duration_ms}
            if error is not None:
                log.warning("external call", kind=kind, call=name, error=error, **event)
            else:
                log.info("external call", kind=kind, call=name, **event)
