"""The global fan-out cap per run (``KODO_MAX_FANOUT``, default 64), whatever the run's optional budget says.

Enforced twice: at admission, on what the request says it will fan out to (``constraints.tests``, a recipe's
rendered list, ``workload.steps``) → 400 ``fanout_cap`` with nothing written; and at runtime on the tasks
DecideST actually planned (a live agent may plan more) → the run fails ``FANOUT_CAP`` before any child
workflow starts.
"""

from __future__ import annotations

from typing import Any

from kodo.errors import PolicyViolation, StepFailure
from kodo.settings import Settings

CODE = "fanout_cap"


def _refuse(what: str, count: int, settings: Settings) -> PolicyViolation:
    return PolicyViolation(f"fan-out cap: {what} asks for {count} tasks > KODO_MAX_FANOUT {settings.max_fanout}", CODE)


def check_intent(constraints: dict[str, Any], settings: Settings) -> None:
    """Admission: ``constraints.tests`` (one sandbox task each) within the cap."""
    tests = constraints.get("tests")
    if isinstance(tests, list) and len(tests) > settings.max_fanout:
        raise _refuse("constraints.tests", len(tests), settings)


def check_workload(workload: dict[str, Any] | None, settings: Settings) -> None:
    """Admission: ``workload.steps`` (one task each when the intent names no tests) within the cap."""
    steps = (workload or {}).get("steps")
    if isinstance(steps, int) and steps > settings.max_fanout:
        raise _refuse("workload.steps", steps, settings)


def check_planned(count: int, settings: Settings) -> None:
    """Runtime: the tasks DecideST planned, before any is started."""
    if count > settings.max_fanout:
        raise StepFailure("FANOUT_CAP", f"FANOUT_CAP: {count} planned tasks > KODO_MAX_FANOUT {settings.max_fanout}")
