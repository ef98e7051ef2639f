"""The only place DBOS decorators appear. Importing this package registers every workflow."""

from kodo.workflows import escalation, proofs, runs, tasks, timers

__all__ = ["escalation", "proofs", "runs", "tasks", "timers"]
