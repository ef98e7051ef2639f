"""The only place DBOS decorators appear. Importing this package registers every workflow."""

from kodo.workflows import proofs, runs, tasks

__all__ = ["proofs", "runs", "tasks"]
