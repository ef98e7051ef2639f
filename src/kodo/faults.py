"""Named fault points: places where a test, or ``kodo chaos``, makes the process die or fail on purpose.

Off unless ``KODO_FAULT_POINTS`` arms them (only tests and ``kodo chaos`` set it). The value is a comma-separated
list of ``name[:action[:nth]]``: ``action`` is ``kill`` (SIGKILL to this process, the default) or ``raise``
(:class:`FaultInjected`), and ``nth`` is which hit of that point fires (default 1, the first). Code marks a point
with ``faults.hit("sandbox.after_command")``; an unarmed point costs one dictionary lookup.

The names used in the code are listed in :data:`POINTS` (``kodo chaos`` arms them from there); a name that is
armed but not listed is refused at start, so a typo cannot leave a test silently unarmed.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass

from kodo.errors import ConfigurationError

# Every fault point that the code marks, with what a hit there interrupts. Add a name here with its hit().
POINTS: dict[str, str] = {
    "delivery.after_branch": "a delivery created branch kodo/<runId> in the source but has not closed its ledger row",
    "webhooks.dispatch": "a worker fanning webhook events out to deliveries, before that transaction commits",
    "webhooks.after_send": "a webhook delivery after the receiver answered, before the attempt is checkpointed",
    "webhooks.retention_batch": "a webhook retention sweep after a batch of deletes committed, before the next one",
    "sandbox.before_command": "an execution's started row is committed; its command has not run",
    "sandbox.during_command": "the command is running (local) or has run (mock); its result is not kept yet",
    "sandbox.after_command": "the command ended and its result is kept; the step's checkpoint is not written",
    "sandbox.before_settle": "the command's step is checkpointed; the transaction settling its execution is not",
    "gate.reply_recorded": "a reply (or legacy approval) is ledgered in the API's transaction, not yet committed",
    "spend.between_reserve_and_settle": "a live agent call's budget is reserved, the call not yet made nor settled",
    "history.clone_batch": "kodo bench history seed wrote a batch of cloned runs, its transaction not yet committed",
}


class FaultInjected(RuntimeError):
    """Raised at an armed ``raise`` fault point."""


POINTS.update(  # crash-safe patches, workspaces and atomic ops (issue 18 part B)
    {
        "patch.before_write": "a patch's (or an E2B filesOut file's) preimage is committed, its file not yet written",
        "patch.after_write": "a patch's (or an E2B filesOut file's) file is written, the step's commit not yet made",
        "workspace.before_clone": "a run's workspace is about to be cloned, outside any row lock",
        "ops.between_change_and_audit": "an ops change is made in its transaction, its audit row not yet written",
        "sleep.before_sleep": "a durable sleep's before-sleep record is checkpointed, DBOS's sleep not yet started",
    }
)


@dataclass(frozen=True)
class Armed:
    name: str
    action: str  # "kill" | "raise"
    nth: int


_armed: dict[str, Armed] = {}
_hits: dict[str, int] = {}
_lock = threading.Lock()


def parse(spec: str | None) -> dict[str, Armed]:
    """``name[:action[:nth]],…`` → armed points; a malformed or unknown entry is a ConfigurationError."""
    armed: dict[str, Armed] = {}
    for raw in (spec or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        parts = entry.split(":")
        name = parts[0]
        action = parts[1] if len(parts) > 1 and parts[1] else "kill"
        nth_text = parts[2] if len(parts) > 2 else "1"
        if len(parts) > 3 or action not in {"kill", "raise"} or not nth_text.isdecimal() or int(nth_text) < 1:
            raise ConfigurationError(f"KODO_FAULT_POINTS: bad entry {entry!r} (want name[:kill|raise[:nth]])")
        if name not in POINTS:
            raise ConfigurationError(f"KODO_FAULT_POINTS: unknown fault point {name!r}; known: {sorted(POINTS)}")
        armed[name] = Armed(name, action, int(nth_text))
    return armed


def arm(spec: str | None) -> None:
    """Arm the points in ``spec`` for this process (replacing any armed before); ``None`` disarms all."""
    parsed = parse(spec)
    with _lock:
        _armed.clear()
        _armed.update(parsed)
        _hits.clear()


def hit(name: str) -> None:
    """Pass fault point ``name``: nothing unless it is armed and this is its ``nth`` hit."""
    if not _armed:
        return
    armed = _armed.get(name)
    if armed is None:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        fire = _hits[name] == armed.nth
    if not fire:
        return
    if armed.action == "raise":
        raise FaultInjected(f"fault point {name} (hit {armed.nth})")
    os.kill(os.getpid(), signal.SIGKILL)
